"""Proof-of-Attribution commitments: publish them (attribution operator), verify a contribution (anyone)."""

from __future__ import annotations

import json

import click

from payable.cli import Context, fail, pass_context


@click.command()
@click.option("--datanet", "datanet_ids", type=int, multiple=True, help="Datanet id (default: every datanet).")
@pass_context
def commit(ctx: Context, datanet_ids: tuple[int, ...]) -> None:
    """Commit every adapter and influence run on-chain (AttributionRegistry) exactly once; safe to rerun."""
    from pipelines.commitments.publisher import commit_all
    from pipelines.rewards.txsteps import ChainUnavailable

    try:
        result = commit_all(ctx.settings, ctx.deployment(), list(datanet_ids) or None)
    except (ChainUnavailable, LookupError, ValueError) as exc:
        fail(str(exc))
    for commitment, step in zip(result.commitments, result.steps, strict=False):
        click.echo(json.dumps({"commitment_id": commitment.commitment_id, "record_hash": commitment.record_hash(),
                               "step": step.name, "state": step.state, "detail": step.detail,
                               "tx_hashes": list(step.tx_hashes)}))
    for run in result.waiting:
        click.echo(json.dumps({"run": run, "state": "waiting", "detail": "canaries not revealed yet: "
                               "`payable canaries reveal`, then `payable commit` commits the run with its AUC"}))
    if not result.ok:
        fail("some commitments are not on-chain yet; rerun `payable commit` to resume")


@click.command()
@click.option("--contribution", "contribution_id", type=int, required=True, help="Contribution id.")
@click.option("--epoch", "epoch_id", type=int, help="Also check the contribution's payout in this epoch.")
@pass_context
def verify(ctx: Context, contribution_id: int, epoch_id: int | None) -> None:
    """Check a contribution's chain of evidence against the on-chain commitments; one line per link."""
    from pipelines.commitments.verify import verify_contribution

    evidence = verify_contribution(ctx.settings, ctx.deployment(), contribution_id, epoch_id)
    for link in evidence.links:
        click.echo(f"ok    {link.name:21} {link.detail}" + (f" (tx {link.tx_hash})" if link.tx_hash else ""))
    if evidence.broken is not None:
        click.echo(f"FAIL  {evidence.broken.link:21} {evidence.broken.detail}")
        fail(f"contribution {contribution_id}: the {evidence.broken.link} link does not hold")
