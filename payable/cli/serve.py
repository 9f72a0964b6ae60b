"""`payable serve`: the OpenAI-compatible server over every datanet's adapters; `--status` asks a running one."""

from __future__ import annotations

from pathlib import Path

import click

from payable.cli import Context, fail, pass_context
from pipelines.training.arguments import TINY, BaseModelSpec
from pipelines.training.base_model import NAMES, locate


def _status(ctx: Context) -> None:
    from serving.status import NotServing, read_status

    try:
        status = read_status(ctx.settings)
    except NotServing as exc:
        fail(str(exc))
    click.echo(f"payable serve at {status.url} (pid {status.pid}): {len(status.models)} models")
    click.echo(f"  agent {status.agent or 'none (usage unsigned, not paid)'}: {status.agent_standing}")
    for name, value in status.metrics.items():
        click.echo(f"  {name:36} {value:g}")


@click.command()
@click.option("--base", default=TINY, show_default=True,
              help=f"Base model: {', '.join(NAMES)}, a Hugging Face model dir or a .gguf file (as `payable train "
                   "--base`); only adapters trained on it are served.")
@click.option("--context", type=click.IntRange(16), default=2048, show_default=True,
              help="Tokens of context served at most (the model's own when smaller).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Rows in the running batch.")
@click.option("--max-adapters", type=click.IntRange(1), default=1024, show_default=True,
              help="Adapters the cache keeps resident.")
@click.option("--max-adapter-mb", type=click.IntRange(1), default=512, show_default=True,
              help="Bytes of LoRA factors the cache keeps resident, in MiB.")
@click.option("--pin", multiple=True, help="Model to load at start and never evict (id, dn-<id> alias).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True, help="Torch threads.")
@click.option("--agent-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The serving agent's key (hex, or a JSON keystore with PAYABLE_AGENT_KEYSTORE_PASSWORD) that "
                   "signs usage events; default PAYABLE_AGENT_KEY / PAYABLE_AGENT_KEYSTORE.")
@click.option("--status", "show_status", is_flag=True, help="Report the running server's models and cache state.")
@pass_context
def serve(ctx: Context, base: str, context: int, host: str, port: int, max_batch: int, max_adapters: int,
          max_adapter_mb: int, pin: tuple[str, ...], threads: int, agent_key_file: Path | None,
          show_status: bool) -> None:
    """Serve every datanet's LoRA adapters over an OpenAI-compatible API (/v1/completions, /v1/chat/completions,
    /v1/models, /metrics); each finished request appends a usage event to Kafka."""
    if show_status:
        _status(ctx)
        return
    from payable.services import port_open

    if port_open(port, host):
        fail(f"{host}:{port} is already in use; choose another --port")
    try:
        locate(BaseModelSpec(name=base))  # before torch loads: an unknown base is refused at once
    except ValueError as exc:
        fail(str(exc))
    from payable.keys import KeyConfigError
    from serving.errors import ServingError
    from serving.lora import AdapterLoadError
    from serving.server import ServeOptions
    from serving.server import serve as run

    options = ServeOptions(base=base, context=context, host=host, port=port, max_batch=max_batch,
                           max_adapters=max_adapters, max_adapter_bytes=max_adapter_mb << 20, pin=pin, threads=threads,
                           agent_key_file=agent_key_file)
    click.echo(f"payable serve ({base}) on http://{host}:{port}/v1, chat page http://{host}:{port}/ "
               f"(adapters {ctx.settings.adapters_dir}, usage -> {ctx.settings.kafka_bootstrap}); Ctrl-C to stop",
               err=True)
    try:
        run(ctx.settings, options)
    except KeyConfigError as exc:
        fail(str(exc))
    except ValueError as exc:  # a base model of an architecture no runner serves
        fail(str(exc))
    except ServingError as exc:
        fail(exc.message)
    except AdapterLoadError as exc:
        fail(f"cannot pin: {exc}")
