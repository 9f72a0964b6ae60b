"""Reward commands: close and emit an epoch (operator), claim a payout (contributor)."""

from __future__ import annotations

import json

import click

from payable.cli import Context, fail, pass_context
from payable.cli.params import ADDRESS, UIntType


@click.command()
@click.option("--epoch", "epoch_id", type=UIntType(256, 0, "epoch id"),
              help="Epoch id; refused unless it is the due one (default: the due epoch, if any).")
@click.option("--method", help="Influence method to pay on (needed when several are scored).")
@click.option("--push/--no-push", default=None, help="Pay every account with claimBatch (default: small epochs).")
@pass_context
def reward(ctx: Context, epoch_id: int | None, method: str | None, push: bool | None) -> None:
    """Close the due reward epoch (split, Merkle root, log) and put it on-chain exactly once; safe to rerun.

    The due epoch is the one a killed run left unfinished, else a new one when some influence run or some
    served call (usage event) is unpaid; with nothing due, no transaction is sent. The pool, the split rules
    and the usage terms are governed parameters, read from the chain (ProtocolParameters) when the epoch
    closes: governance changes them, not this command."""
    from pipelines.rewards.cycle import EpochNotDue, close_due_epoch
    from pipelines.rewards.emitter import emit_epoch
    from pipelines.rewards.epochs import EpochConflict, EpochNotClosed, NothingToPay
    from pipelines.rewards.params import ParametersMissing
    from pipelines.rewards.txsteps import ChainUnavailable

    settings = ctx.settings
    try:
        deployment = ctx.deployment()
        due, closed = close_due_epoch(settings, deployment, method=method, epoch_id=epoch_id)
        for exclusion in (*due.excluded, *(x for x in due.usage_excluded if x.paid_in is None)):
            click.echo(json.dumps(exclusion.to_json()))  # usage paid before is counted, not listed: it only grows
        if due.epoch_id is None:
            click.echo(json.dumps({"nothing_due": due.describe()}))
            return
        if closed is not None:
            click.echo(json.dumps({"closed": closed.epoch_id, "merkle_root": closed.merkle_root,
                                   "pool": str(closed.pool), "total": str(closed.total), "accounts": closed.accounts}))
        if closed is not None and closed.usage_events:
            click.echo(json.dumps({"usage": {"epoch": closed.epoch_id, "events": closed.usage_events,
                                             "fees": str(closed.usage_fees), "paid": str(closed.usage_paid),
                                             "carry_out": str(closed.usage_carry_out)}}))
        result = emit_epoch(settings, deployment, due.epoch_id, push=push)
    except (EpochNotDue, NothingToPay, EpochConflict, EpochNotClosed, ChainUnavailable, ParametersMissing,
            FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    for step in result.steps:
        click.echo(json.dumps({"step": step.name, "state": step.state, "detail": step.detail,
                               "tx_hashes": list(step.tx_hashes)}))
    if not result.ok:
        fail(f"epoch {due.epoch_id}: some steps did not finish; rerun `payable reward` to resume it")


@click.command()
@click.option("--epoch", "epoch_id", type=UIntType(256, 1, "epoch id"), required=True, help="Epoch id.")
@click.option("--account", type=ADDRESS, help="Claim for this address (default: the contributor key's own).")
@pass_context
def claim(ctx: Context, epoch_id: int, account: str | None) -> None:
    """Claim a reward epoch's payout with its Merkle proof (the contributor key pays the gas)."""
    from payable.chain import ChainError
    from payable.keys import Role, load_account
    from pipelines.rewards.claims import claim as claim_payout
    from pipelines.rewards.epochs import EpochNotClosed

    sender = load_account(Role.CONTRIBUTOR, local_chain=ctx.settings.local_chain)
    try:
        result = claim_payout(ctx.settings, ctx.deployment(), epoch_id, sender, account)
    except (KeyError, EpochNotClosed, ChainError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
    click.echo(json.dumps({"epoch": epoch_id, "index": result.index, "account": result.account,
                           "amount": str(result.amount),
                           "tx_hash": result.tx_hash, "already_claimed": result.tx_hash is None}))
