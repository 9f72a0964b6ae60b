"""The ``payable`` command line: one entry point, one module per stage under ``payable/cli/``.

Subcommands are registered by name and imported only when used (or listed by ``--help``), and heavy
modules (web3, torch, beam) are imported inside the commands, so the CLI starts fast.

Bad input never ends in a traceback: arguments are checked by the parameter types in
``payable.cli.params`` (exit 2, click's usage error), and a ``PayableError`` or a chain failure raised
anywhere below a command is printed by the group as one ``error:`` line (exit 1).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from payable.settings import Settings

# Lance's Rust side logs WARN lines (e.g. "No existing dataset ... it will be created") on stderr, which
# would break the CLI's one-line errors; set before any command imports lance. LANCE_LOG still overrides.
os.environ.setdefault("LANCE_LOG", "error")

# command name -> "module:attribute" of its click command, in the order of the loop.
COMMANDS = {
    "up": "payable.cli.core:up",
    "down": "payable.cli.core:down",
    "status": "payable.cli.core:status",
    "deploy": "payable.cli.core:deploy",
    "fund": "payable.cli.core:fund",
    "datanet": "payable.cli.core:datanet",
    "contribute": "payable.cli.core:contribute",
    "ingest": "payable.cli.ingest:ingest",
    "mine": "payable.cli.core:mine",
    "validate": "payable.cli.validate:validate",
    "train": "payable.cli.attribution:train",
    "attribute": "payable.cli.attribution:attribute",
    "canaries": "payable.cli.attribution:canaries",
    "commit": "payable.cli.commitments:commit",
    "demo": "payable.cli.core:demo",
    "ui": "payable.cli.ui:ui",
    "reward": "payable.cli.rewards:reward",
    "claim": "payable.cli.rewards:claim",
    "verify": "payable.cli.commitments:verify",
    "audit": "payable.cli.audit:audit",
    "reconcile": "payable.cli.audit:reconcile",
    "govern": "payable.cli.govern:govern",
    "serve": "payable.cli.serve:serve",
    "attribute-usage": "payable.cli.usage:attribute_usage",
    "agents": "payable.cli.agents:agents",
}


class Context:
    """What every command shares: settings, and on demand the chain client, deployment and store."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def chain(self):
        from payable.chain import Chain

        return Chain(self.settings.rpc_url)

    def deployment(self):
        from payable.chain import Deployment

        return Deployment.load(self.settings.deployment_file)

    def store(self):
        from payable.content_store import ContentStore

        return ContentStore(self.settings.content_dir)


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> None:
    """Prints ``message`` as an error and exits 1: the CLI's one way to refuse."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def user_error(exc: BaseException, settings: Settings | None) -> str | None:
    """The one line to show for ``exc`` if it is a failure the user can act on, else None (a bug).

    Chain and Kafka failures (connection refused, node refusals, a broker that never answered) are
    recognised only when their client has been loaded: a command that never touched one pays nothing.
    """
    from payable.errors import PayableError

    mapped: BaseException | None = exc if isinstance(exc, PayableError) else None
    if mapped is None and "web3" in sys.modules:
        from payable.chain import chain_error

        mapped = chain_error(exc, rpc_url=settings.rpc_url if settings else "")
    if mapped is None and "kafka" in sys.modules:
        from payable.kafka_log import log_error

        mapped = log_error(exc, settings.kafka_bootstrap if settings else "the configured bootstrap address")
    return None if mapped is None else str(mapped)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use, and whose failures read as one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            line = user_error(exc, ctx.obj.settings if isinstance(ctx.obj, Context) else None)
            if line is None:
                raise
            fail(line)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), envvar="PAYABLE_DATA_DIR",
              help="Data directory (default .payable/, env PAYABLE_DATA_DIR).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """payable: pay data contributors by their measured influence on AI models."""
    try:
        settings = Settings.from_env(data_dir)
    except ValueError as exc:  # a malformed PAYABLE_* variable
        fail(str(exc))
    ctx.obj = Context(settings)
