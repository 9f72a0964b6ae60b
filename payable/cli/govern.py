"""``payable govern``: change a governed parameter through the Governor (propose, vote, queue, execute).

Each subcommand is one Governor step, signed by one role's key (``--role``, default the deployer, which holds
the supply outside the treasury); what each step may do is decided in ``payable.governance``. On the local
chain the vote's blocks and the timelock delay pass with ``payable mine N [--seconds S]``; a step taken too
early says which.
"""

from __future__ import annotations

import json

import click

from payable.cli import Context, pass_context
from payable.cli.params import ADDRESS, UIntType

PROPOSAL_ID = UIntType(256, 0, "proposal id")
ROLES = ("deployer", "operator", "validator", "contributor", "trainer")


@click.group()
@click.option("--role", type=click.Choice(ROLES), default="deployer", show_default=True,
              help="Whose key signs (its PAYABLE_<ROLE>_KEY; the dev account on the local chain).")
@click.pass_context
def govern(click_ctx: click.Context, role: str) -> None:
    """Change a governed parameter (the epoch pool, usage terms, harm rule, reputation prior) by a proposal."""
    click_ctx.meta["govern_role"] = role


def _governance(ctx: Context):
    from payable.governance import Governance

    return Governance(ctx.chain(), ctx.deployment())


def _sender(ctx: Context):
    from payable.keys import Role, load_account

    role = click.get_current_context().meta["govern_role"]
    return load_account(Role[role.upper()], local_chain=ctx.settings.local_chain)


def _echo(record: dict) -> None:
    click.echo(json.dumps(record))


@govern.command()
@click.option("--set", "changes", multiple=True, metavar="NAME=VALUE", required=True,
              help="A parameter of ProtocolParameters.all() and its new value, e.g. epochPool=1000000000000000000000; "
                   "repeat for several.")
@click.option("--description", default="", help="The proposal's text (default: the changes).")
@pass_context
def propose(ctx: Context, changes: tuple[str, ...], description: str) -> None:
    """Propose changing governed parameters; prints the proposal id."""
    parsed = {}
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{change!r} is not NAME=VALUE", param_hint="--set")
        parsed[name.strip()] = value
    _echo(_governance(ctx).propose(_sender(ctx), parsed, description).summary())


@govern.command()
@click.argument("proposal_id", type=PROPOSAL_ID)
@click.option("--support", type=click.Choice(["for", "against", "abstain"]), default="for", show_default=True)
@pass_context
def vote(ctx: Context, proposal_id: int, support: str) -> None:
    """Vote on an open proposal with the votes delegated to the key at its snapshot."""
    proposal, weight = _governance(ctx).vote(_sender(ctx), proposal_id, support)
    _echo({**proposal.summary(), "voted": support, "weight": str(weight)})


@govern.command()
@click.argument("proposal_id", type=PROPOSAL_ID)
@pass_context
def queue(ctx: Context, proposal_id: int) -> None:
    """Queue a proposal that passed its vote in the timelock."""
    _echo(_governance(ctx).queue(_sender(ctx), proposal_id).summary())


@govern.command()
@click.argument("proposal_id", type=PROPOSAL_ID)
@pass_context
def execute(ctx: Context, proposal_id: int) -> None:
    """Execute a queued proposal once the timelock delay is over: the parameters change."""
    governance = _governance(ctx)
    proposal = governance.execute(_sender(ctx), proposal_id)
    _echo({**proposal.summary(), "parameters": {k: str(v) for k, v in governance.current().items()}})


@govern.command()
@click.argument("proposal_id", type=PROPOSAL_ID, required=False)
@pass_context
def status(ctx: Context, proposal_id: int | None) -> None:
    """Print one proposal (or every proposal, then the current parameters), one JSON line each."""
    governance = _governance(ctx)
    if proposal_id is not None:
        _echo(governance.proposal(proposal_id).summary())
        return
    for proposal in governance.proposals():
        _echo(proposal.summary())
    _echo({"parameters": {k: str(v) for k, v in governance.current().items()}})


@govern.command()
@click.option("--to", type=ADDRESS, help="Delegate to this address (default: the key's own, to vote itself).")
@pass_context
def delegate(ctx: Context, to: str | None) -> None:
    """Delegate the key's OPEN votes (ERC20Votes counts only delegated balances)."""
    sender = _sender(ctx)
    balance = _governance(ctx).delegate(sender, to or sender.address)
    _echo({"delegator": sender.address, "delegate": to or sender.address, "votes": str(balance)})
