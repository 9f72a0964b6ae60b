"""Ingest asset: confirmed chain facts of payable's contracts on the Kafka log, reorgs retracted."""

import dagster as dg

from assets.plots import table_md
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, deployment, stage_settings
from pipelines.ingest.ingester import DeepReorg, ingest_until_head

OWNERS = ["team:data-platform"]


@dg.asset(
    group_name="ingest", kinds={"ethereum", "kafka"}, owners=OWNERS,
    description="One catch-up pass of the chain ingester: logs of the registry and distributor past the "
                "confirmation depth, decoded into chain facts keyed by datanet (Kafka transactions with the "
                "checkpoint), FactRetracted for reorged facts, undecodable logs to the dead-letter topic.",
)
def chain_events(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    try:
        report = ingest_until_head(settings, deployment(settings))
    except DeepReorg as exc:
        raise dg.Failure(f"reorg deeper than the confirmation window: {exc}", allow_retries=False) from exc
    return dg.MaterializeResult(metadata={
        "facts": report.events,
        "facts_by_type": table_md([{"event": t, "count": n} for t, n in sorted(report.facts.items())]),
        "retracted": report.retracted,
        "dead_letters": report.dead_letters,
        "alerts": str(report.alerts),
        "blocks": f"{report.from_block}..{report.next_block - 1}",
        "head": report.head, "confirmed_head": report.safe_head,
        "events_per_s": round(report.events_per_s, 1),
    })


@dg.asset_check(asset=chain_events, description="The last pass wrote no dead letters and raised no alerts "
                "(undecodable logs and reorgs are recorded, but an operator should look at them).",
                blocking=False)
def no_dead_letters_or_alerts(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("chain_events"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    dead = metadata["dead_letters"].value if "dead_letters" in metadata else 0
    alerts = metadata["alerts"].value if "alerts" in metadata else "[]"
    return dg.AssetCheckResult(passed=dead == 0 and alerts == "[]", severity=dg.AssetCheckSeverity.WARN,
                               metadata={"dead_letters": dead, "alerts": alerts})
