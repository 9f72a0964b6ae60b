"""``payable ingest``: confirmed chain facts into Kafka, once (``--until-head``) or following the chain."""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING

import click

from payable.cli import Context, fail, pass_context

if TYPE_CHECKING:
    from payable.chain import Deployment
    from pipelines.ingest import IngestReport

EXIT_DEEP_REORG = 3


def _summary(report: IngestReport) -> str:
    facts = ", ".join(f"{name} {count}" for name, count in sorted(report.facts.items())) or "no new facts"
    scanned = (f"blocks {report.from_block}..{report.next_block - 1}" if report.next_block > report.from_block
               else "no newly confirmed blocks")
    return (f"{scanned} (head {report.head}, confirmed {report.safe_head}): {facts}; retracted "
            f"{report.retracted}; dead letters {report.dead_letters}; {report.events_per_s:,.0f} facts/s")


def _waiting(ctx: Context, deployment: Deployment, report: IngestReport) -> str | None:
    """What payable's events past the confirmed head wait for, and on the local chain how to give it to them.

    The confirmation depth is ``head - safe_head``: an event's block is confirmed once that many blocks
    are mined on top of it. Anvil mines only on transactions, so on a quiet local chain a contribution
    waits forever unless blocks are mined (``payable mine``).
    """
    first = max(report.next_block, report.safe_head + 1, 1)
    if report.head < first:
        return None
    logs = ctx.chain().w3.eth.get_logs({"fromBlock": first, "toBlock": report.head,
                                        "address": [deployment.registry, deployment.distributor]})
    if not logs:
        return None
    blocks = sorted({log["blockNumber"] for log in logs})
    where = f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}..{blocks[-1]}"
    depth = report.head - report.safe_head
    needed = blocks[-1] + depth - report.head
    hint = f"; on the local chain run `payable mine {needed}`" if ctx.settings.local_chain else ""
    return (f"{len(logs)} event(s) in {where} are not confirmed yet: they need {needed} "
            f"more block(s) (confirmations {depth}){hint}, then ingest again")


@click.command()
@click.option("--until-head", is_flag=True, help="One catch-up pass to head - confirmations, then exit.")
@click.option("--confirmations", type=click.IntRange(min=0), default=None,
              help="Blocks a fact must be buried under (default: PAYABLE_CONFIRMATIONS, 12). A dev chain "
                   "that mines only on transactions needs a low value or empty blocks to confirm anything.")
@click.option("--reorg-window", type=click.IntRange(min=1), default=128, show_default=True,
              help="Blocks whose hashes are kept to repair reorgs; a deeper reorg stops the ingester.")
@click.option("--max-span", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Most blocks in one eth_getLogs range (some RPC providers allow few).")
@click.option("--poll-interval", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="Seconds between passes when following the chain.")
@pass_context
def ingest(ctx: Context, until_head: bool, confirmations: int | None, reorg_window: int, max_span: int,
           poll_interval: float) -> None:
    """Ingest the contracts' logs into Kafka as chain facts (exit 3 on a reorg deeper than the window)."""
    from kafka.errors import KafkaError

    from pipelines.ingest import DeepReorg, IngestOptions, ingest_forever, ingest_until_head
    from pipelines.ingest.rpc import RpcUnavailable
    from pipelines.ingest.sink import SinkError

    options = IngestOptions(confirmations=confirmations, reorg_window=reorg_window, max_span=max_span,
                            poll_interval_s=poll_interval)
    deployment = ctx.deployment()
    try:
        if until_head:
            report = ingest_until_head(ctx.settings, deployment, options)
            click.echo(_summary(report))
            waiting = _waiting(ctx, deployment, report)
            if waiting:
                click.echo(waiting)
            return
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        click.echo(f"following chain {deployment.chain_id} at {ctx.settings.rpc_url} into "
                   f"{ctx.settings.kafka_bootstrap}; Ctrl-C stops after the current transaction")
        ingest_forever(ctx.settings, deployment, options, stop,
                       on_pass=lambda r: click.echo(_summary(r)) if r.spans or r.retracted else None)
    except DeepReorg as exc:
        click.secho(f"ALERT: {exc}", fg="red", err=True)
        sys.exit(EXIT_DEEP_REORG)
    except (RpcUnavailable, SinkError, KafkaError) as exc:  # after the retries ran out
        fail(f"ingest gave up: {exc}")
