"""The ``payable`` command line: one entry point, a subcommand per job.

Heavy modules (web3, torch, beam) are imported inside the commands that need them, so
``payable --help`` and ``payable status`` stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from payable.settings import Settings


class Context:
    """What every command shares: settings, and lazily the chain client and deployment."""

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
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="PAYABLE_DATA_DIR",
              help="Data directory (default .payable/, env PAYABLE_DATA_DIR).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """payable: pay data contributors by their measured influence on AI models."""
    ctx.obj = Context(Settings.from_env(data_dir))


@main.command()
@pass_context
def up(ctx: Context) -> None:
    """Start the local chain node and Kafka broker (embedded defaults)."""
    from payable import services

    try:
        pids = services.up(ctx.settings)
    except services.ServiceError as exc:
        fail(str(exc))
    for name, pid in pids.items():
        click.echo(f"{name}: running (pid {pid})")
    click.echo(f"chain {ctx.settings.rpc_url} · kafka {ctx.settings.kafka_bootstrap} · data {ctx.settings.data_dir}")


@main.command()
@pass_context
def down(ctx: Context) -> None:
    """Stop the local services that `payable up` started."""
    from payable import services

    stopped = services.down(ctx.settings)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@main.command()
@pass_context
def status(ctx: Context) -> None:
    """Show each service's endpoint, PID and health."""
    from payable import services

    rows = services.status(ctx.settings)
    for row in rows:
        state = "healthy" if row.healthy else "DOWN"
        pid = f"pid {row.pid}" if row.pid else "-"
        click.echo(f"{row.name:7} {row.endpoint:28} {pid:12} {state}")
    if not all(row.healthy for row in rows):
        sys.exit(1)


@main.command()
@pass_context
def deploy(ctx: Context) -> None:
    """Deploy the contracts to the configured chain and record their addresses."""
    from contracts.deploy import deploy as deploy_contracts
    from payable.keys import Role, load_account

    local = ctx.settings.local_chain
    deployer = load_account(Role.DEPLOYER, local_chain=local)
    operator = load_account(Role.OPERATOR, local_chain=local)
    deployment = deploy_contracts(ctx.chain(), deployer, operator.address)
    deployment.save(ctx.settings.deployment_file)
    click.echo(json.dumps(deployment.__dict__, indent=2))


@main.group()
def datanet() -> None:
    """Create and inspect datanets."""


@datanet.command("create")
@click.option("--name", required=True, help="Human-readable name.")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True)
@click.option("--required-field", "required_fields", multiple=True, help="For jsonl: a field every record needs.")
@click.option("--min-stake", type=int, default=10**18, show_default=True, help="Stake per contribution (OPEN wei).")
@click.option("--max-size", type=int, default=1_000_000, show_default=True, help="Largest contribution in bytes.")
@click.option("--validator", "validators", multiple=True, help="Validator address (default: the validator key).")
@click.option("--description", default="")
@pass_context
def datanet_create(ctx: Context, name: str, fmt: str, required_fields: tuple[str, ...], min_stake: int,
                   max_size: int, validators: tuple[str, ...], description: str) -> None:
    """Create a datanet owned by the deployer key; prints its id."""
    from payable.chain import ChainError
    from payable.datanets import DatanetSpec, create_datanet
    from payable.keys import Role, load_account

    local = ctx.settings.local_chain
    spec = DatanetSpec(name, fmt, required_fields, description)
    validator_list = list(validators) or [load_account(Role.VALIDATOR, local_chain=local).address]
    try:
        datanet_id = create_datanet(
            ctx.chain(), ctx.deployment(), ctx.store(), load_account(Role.DEPLOYER, local_chain=local), spec,
            min_stake=min_stake, max_contribution_size=max_size, validators=validator_list,
        )
    except (ChainError, FileNotFoundError) as exc:
        fail(str(exc))
    click.echo(json.dumps({"datanet_id": datanet_id, "name": name}))


@main.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_context
def contribute(ctx: Context, datanet_id: int, files: tuple[Path, ...]) -> None:
    """Submit FILES to a datanet: store each content-addressed, stake OPEN, send the transaction."""
    from payable.chain import ChainError
    from payable.datanets import ContributionError
    from payable.datanets import contribute as submit
    from payable.keys import Role, load_account

    contributor = load_account(Role.CONTRIBUTOR, local_chain=ctx.settings.local_chain)
    try:
        results = submit(ctx.chain(), ctx.deployment(), ctx.store(), contributor, datanet_id, list(files))
    except (ContributionError, ChainError, FileNotFoundError) as exc:
        fail(str(exc))
    for result in results:
        click.echo(json.dumps({"contribution_id": result.contribution_id, "tx_hash": result.tx_hash,
                               "content_hash": result.content_hash, "uri": result.uri}))


@main.command()
@pass_context
def demo(ctx: Context) -> None:
    """Run the main job end to end on the embedded defaults and print a summary."""
    from payable.demo import run_demo

    run_demo(ctx.settings)
