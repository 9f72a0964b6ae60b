"""`payable serve`: the OpenAI-compatible server over every datanet's adapters; `--status` asks a running one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import click

from payable.cli import Context, fail, pass_context

PREFIX = "payable_serve_"


def parse_metrics(text: str) -> dict[str, float]:
    """Metric name -> value from Prometheus' text format (no labels in payable's /metrics)."""
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def _status(ctx: Context) -> None:
    """Reads the running server's /metrics and /v1/models (imports nothing heavy: no torch for a status line)."""
    path = ctx.settings.run_dir / "serve.json"
    if not path.exists():
        fail(f"no server is running for {ctx.settings.data_dir} (no {path}); start one with `payable serve`")
    where = json.loads(path.read_text())
    url = f"http://{where['host']}:{where['port']}"
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = parse_metrics(response.read().decode())
        with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
            models = [m["id"] for m in json.loads(response.read())["data"]]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(f"the server at {url} (pid {where['pid']}) does not answer: {exc}")
    click.echo(f"payable serve at {url} (pid {where['pid']}): {len(models)} models")
    for name, value in metrics.items():
        click.echo(f"  {name.removeprefix(PREFIX):36} {value:g}")


@click.command()
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
@click.option("--status", "show_status", is_flag=True, help="Report the running server's models and cache state.")
@pass_context
def serve(ctx: Context, host: str, port: int, max_batch: int, max_adapters: int, max_adapter_mb: int,
          pin: tuple[str, ...], threads: int, show_status: bool) -> None:
    """Serve every datanet's LoRA adapters over an OpenAI-compatible API (/v1/completions, /v1/chat/completions,
    /v1/models, /metrics); each finished request appends a usage event to Kafka."""
    if show_status:
        _status(ctx)
        return
    from payable.services import port_open
    from serving.errors import ServingError
    from serving.lora import AdapterLoadError
    from serving.server import ServeOptions
    from serving.server import serve as run

    if port_open(port, host):
        fail(f"{host}:{port} is already in use; choose another --port")
    options = ServeOptions(host=host, port=port, max_batch=max_batch, max_adapters=max_adapters,
                           max_adapter_bytes=max_adapter_mb << 20, pin=pin, threads=threads)
    click.echo(f"payable serve on http://{host}:{port}/v1 (adapters {ctx.settings.adapters_dir}, "
               f"usage -> {ctx.settings.kafka_bootstrap}); Ctrl-C to stop", err=True)
    try:
        run(ctx.settings, options)
    except ServingError as exc:
        fail(exc.message)
    except AdapterLoadError as exc:
        fail(f"cannot pin: {exc}")
