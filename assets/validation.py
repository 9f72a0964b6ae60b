"""Validation assets: every contribution decided (verdicts on the log), datasets materialized per datanet."""

from collections import Counter

import dagster as dg

from assets.partitions import datanet_id_of, datanet_partitions, partition_key
from assets.plots import table_md
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, stage_settings
from pipelines import log_views
from pipelines.validate import materialize
from pipelines.validate.run import validate_new_offsets
from schemas import topics

OWNERS = ["team:data-platform"]


@dg.asset(
    group_name="validate", kinds={"beam", "kafka"}, owners=OWNERS, deps=["chain_events"],
    description="Validates and deduplicates every new chain fact (Beam over bounded Kafka offset ranges); "
                "produces accepted/rejected verdicts to the log and one Lance version per changed datanet.",
)
def contribution_verdicts(context: dg.AssetExecutionContext, data_dir: DataDirResource, chain: ChainResource,
                          kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    report = validate_new_offsets(settings)
    keys = [partition_key(d) for d in sorted(report.datanets)]
    new_keys = [k for k in keys if not context.instance.has_dynamic_partition(datanet_partitions.name, k)]
    if new_keys:
        context.instance.add_dynamic_partitions(datanet_partitions.name, new_keys)
    rejected = Counter()
    for datanet in report.datanets.values():
        rejected.update(datanet.rejected)
    accepted = sum(d.accepted for d in report.datanets.values())
    submitted = report.submitted
    return dg.MaterializeResult(metadata={
        "submitted": submitted,
        "accepted": accepted,
        "rejected": sum(rejected.values()),
        "rejection_rate": round(sum(rejected.values()) / submitted, 4) if submitted else 0.0,
        "rejections_by_reason": table_md([{"reason": r, "count": n, "rate": round(n / submitted, 4)}
                                          for r, n in rejected.most_common()]),
        "dead_letters": report.dead_letters,
        "offset_ranges": str({p: list(r) for p, r in sorted(report.ranges.items())}),
        "new_dataset_versions": str({partition_key(d): r.lance_version for d, r in report.datanets.items()
                                     if r.lance_version is not None}),
    })


@dg.asset_check(asset=contribution_verdicts, description="accepted + rejected = submitted: every live "
                "contribution on the log has exactly one current verdict (invariant 5).")
def every_contribution_decided(kafka: KafkaResource) -> dg.AssetCheckResult:
    submissions = log_views.live_submissions(log_views.read_view(kafka.bootstrap, topics.CHAIN_FACTS))
    verdicts = log_views.current_verdicts(log_views.read_view(kafka.bootstrap, topics.VERDICTS))
    undecided = sorted(set(submissions) - set(verdicts))
    statuses = Counter(v["status"] for v in verdicts.values())
    return dg.AssetCheckResult(
        passed=not undecided,
        metadata={"submitted": len(submissions), "accepted": statuses["accepted"],
                  "rejected": statuses["rejected"], "undecided_contribution_ids": str(undecided[:50])},
    )


@dg.asset(
    group_name="validate", kinds={"lance"}, owners=OWNERS, deps=[contribution_verdicts],
    partitions_def=datanet_partitions,
    description="A datanet's accepted contributions as a versioned Lance dataset; each version names the "
                "Kafka offsets and verdicts it covers.",
)
def datanet_datasets(context: dg.AssetExecutionContext, data_dir: DataDirResource) -> dg.MaterializeResult:
    datanet_id = datanet_id_of(context.partition_key)
    uri = materialize.dataset_uri(data_dir.settings().lance_dir, datanet_id)
    dataset = materialize.open_dataset(uri)
    version = materialize.latest_version(uri)
    return dg.MaterializeResult(metadata={
        "uri": uri,
        "rows": dataset.count_rows() if dataset else 0,
        "lance_version": dataset.version if dataset else 0,
        "validate_run": version.run_id if version else "",
        "offsets_covered": str(version.offsets) if version else "{}",
    })



@dg.asset_check(asset=datanet_datasets, description="The dataset holds exactly the datanet's currently "
                "accepted contributions: none missing, none extra, none twice.")
def dataset_matches_verdicts(context: dg.AssetCheckExecutionContext, data_dir: DataDirResource,
                             kafka: KafkaResource) -> dg.AssetCheckResult:
    datanet_id = datanet_id_of(context.partition_key)
    accepted = log_views.accepted_contributions(kafka.bootstrap, datanet_id)
    dataset = materialize.open_dataset(materialize.dataset_uri(data_dir.settings().lance_dir, datanet_id))
    rows = dataset.to_table(columns=["contribution_id"])["contribution_id"].to_pylist() if dataset else []
    twice = sorted(c for c, n in Counter(rows).items() if n > 1)
    missing, extra = sorted(accepted - set(rows)), sorted(set(rows) - accepted)
    return dg.AssetCheckResult(passed=not (missing or extra or twice), metadata={
        "rows": len(rows), "accepted": len(accepted), "missing_contribution_ids": str(missing[:50]),
        "unexpected_contribution_ids": str(extra[:50]), "duplicated_contribution_ids": str(twice[:50]),
    })
