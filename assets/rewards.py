"""Reward assets: the epoch's pool split by influence and its served calls' fees (Merkle root), put on-chain
exactly once, and what usage paid whom."""

import dagster as dg

from assets.attribution import influence_scores
from assets.plots import bars, table_md
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, deployment, stage_settings
from pipelines.rewards import outbox
from pipelines.rewards.cycle import close_due_epoch, due_epoch, unfinished_epoch
from pipelines.rewards.emitter import emit_epoch
from pipelines.rewards.epochs import load_epoch, next_epoch_id
from pipelines.rewards.usage import usage_ledger

OWNERS = ["team:protocol"]


@dg.asset(
    group_name="rewards", kinds={"kafka"}, owners=OWNERS, deps=[influence_scores],
    description="Closes the reward epoch that is due: the pool split among contributors by positive influence "
                "weighted by reputation, penalties for redundant or harmful data, the fees of the served calls "
                "no epoch paid yet (RAG sources, training contributors, trainer), a Merkle root over "
                "(index, account, amount), all recorded on the rewards outbox. Each influence run and each usage event "
                "is paid in one epoch; what is left out is listed, with why. No new epoch when nothing "
                "changed, nor while an earlier one is unfinished on-chain. The pool, the split rules and the "
                "usage terms are the governed parameters (ProtocolParameters) read from chain at the closing block.",
)
def reward_epochs(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    due, closed_now = close_due_epoch(settings, deployment(settings))
    newest = due.epoch_id or next_epoch_id(settings) - 1
    metadata = {"due": due.describe(), "closed_now": closed_now is not None,
                "excluded_runs": table_md([{"run": x.run, "reason": x.reason} for x in due.excluded]),
                "usage_events_due": due.usage_due}
    if newest == 0:
        return dg.MaterializeResult(metadata={"epoch_id": 0, **metadata})
    epoch = load_epoch(settings, newest)
    marker = outbox.closed_epochs(settings.kafka_bootstrap)[newest]
    payouts = sorted(zip(epoch.accounts, epoch.amounts, strict=True), key=lambda p: -p[1])
    return dg.MaterializeResult(metadata={
        "epoch_id": newest, **metadata,
        "merkle_root": "0x" + epoch.root.hex(),
        "governed_params": marker.get("params", "closed before governed parameters"),
        "params_block": marker.get("params_block", 0),
        "pool": str(epoch.pool), "carry_in": str(epoch.carry_in), "carry_out": str(epoch.carry_out),
        "total_paid": str(epoch.total),
        "accounts_paid": len(epoch.accounts),
        "slash_requests": len(epoch.slash_requests),
        "payouts": table_md([{"account": a, "OPEN": f"{x / 10**18:.6f}"} for a, x in payouts]),
    })


@dg.asset_check(asset=reward_epochs, description="Payouts never exceed the pool and the fees: total paid = pool + "
                "carry in - carry out + usage fees + usage carry in - usage carry out.")
def payout_total_equals_pool_minus_carry(data_dir: DataDirResource, chain: ChainResource,
                                         kafka: KafkaResource) -> dg.AssetCheckResult:
    settings = stage_settings(data_dir, chain, kafka)
    newest = next_epoch_id(settings) - 1
    if newest == 0:
        return dg.AssetCheckResult(passed=True, metadata={"epochs": 0})
    epoch = load_epoch(settings, newest)
    return dg.AssetCheckResult(passed=epoch.balanced, metadata={
        "epoch_id": newest, "total_paid": str(epoch.total), "pool": str(epoch.pool),
        "carry_in": str(epoch.carry_in), "carry_out": str(epoch.carry_out), "usage_fees": str(epoch.usage_fees),
        "usage_carry_in": str(epoch.usage_carry_in), "usage_carry_out": str(epoch.usage_carry_out)})


@dg.asset(
    group_name="rewards", kinds={"ethereum"}, owners=OWNERS, deps=[reward_epochs],
    op_tags={"payable/rewards": "epoch"}, retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    description="Puts the unfinished closed epoch on-chain through RewardDistributor exactly once (outbox: intent "
                "before send, reconcile with the chain on restart): funding, publishEpoch, push payouts for "
                "small epochs, and slashes of penalized stakes.",
)
def onchain_payouts(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    target = deployment(settings)
    epoch_id = unfinished_epoch(settings, target)
    if epoch_id is None:
        return dg.MaterializeResult(metadata={"epoch_id": next_epoch_id(settings) - 1,
                                              "note": "every closed epoch is on-chain: nothing sent"})
    result = emit_epoch(settings, target, epoch_id)
    if not result.ok:
        failed = [f"{s.name}: {s.detail}" for s in result.steps if s.state != "done"]
        raise dg.Failure(f"epoch {epoch_id} not fully on-chain; a retry resumes it", metadata={"failed": str(failed)})
    return dg.MaterializeResult(metadata={
        "epoch_id": epoch_id, "merkle_root": result.merkle_root, "total": str(result.total),
        "steps": table_md([{"step": s.name, "state": s.state, "txs": ", ".join(h[:12] + "…" for h in s.tx_hashes),
                            "detail": s.detail} for s in result.steps]),
        "tx_hashes": str([h for s in result.steps for h in s.tx_hashes]),
    })


@dg.asset(
    group_name="rewards", kinds={"kafka"}, owners=OWNERS, deps=[reward_epochs],
    description="What served calls paid whom: the usage lines of every closed reward epoch (RAG sources by "
                "context-attribution weight, training contributors by the influence shares their run was paid "
                "on, the adapter's trainer), the usage events left out and why, and earnings per contributor.",
)
def usage_rewards(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    ledger = usage_ledger(settings)
    due = due_epoch(settings, deployment(settings))
    newest = max(ledger.closed, default=0)
    earnings = sorted(ledger.earnings().items(), key=lambda e: -e[1])
    metadata = {
        "epoch_id": newest,
        "usage_events_paid": ledger.closed[newest]["usage_events"] if newest else 0,
        "usage_events_paid_total": sum(c["usage_events"] for c in ledger.closed.values()),
        "usage_fees_total": str(sum(int(c["usage_fees"]) for c in ledger.closed.values())),
        "excluded_usage": table_md([{"usage event": x.usage_event_id, "reason": x.reason}
                                    for x in due.usage_excluded if x.paid_in is None]),
        "earnings": table_md([{"account": a, "OPEN": f"{x / 10**18:.6f}"} for a, x in earnings]),
    }
    if earnings:
        top = earnings[:20]
        metadata["earnings_plot"] = bars([a[:10] + "…" for a, _ in top], [x / 10**18 for _, x in top],
                                         "usage earnings per account", "OPEN")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=usage_rewards, description="Every usage event is paid at most once: no two closed epochs "
                "commit usage lines for the same event.")
def every_usage_event_paid_at_most_once(data_dir: DataDirResource, chain: ChainResource,
                                        kafka: KafkaResource) -> dg.AssetCheckResult:
    twice = usage_ledger(stage_settings(data_dir, chain, kafka)).paid_more_than_once()
    return dg.AssetCheckResult(passed=not twice, metadata={"paid_more_than_once": table_md(
        [{"usage event": u, "epochs": e} for u, e in twice.items()])})


@dg.asset_check(asset=usage_rewards, description="Usage payouts = fees collected minus carry: in every closed "
                "epoch the usage lines add up to its fees + usage carry in - usage carry out, and each carry in is "
                "the previous epoch's carry out.")
def usage_payouts_equal_fees_minus_carry(data_dir: DataDirResource, chain: ChainResource,
                                         kafka: KafkaResource) -> dg.AssetCheckResult:
    problems = usage_ledger(stage_settings(data_dir, chain, kafka)).unbalanced()
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none"})
