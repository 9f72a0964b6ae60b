"""Sensors: they only read offsets and versions; the runs they request do the work.

- ``new_chain_facts``: the chain-facts topic has offsets past the validate stage's checkpoint, so a
  validation run is due (run key = the end offsets, so the same backlog is never requested twice).
- ``changed_datasets``: a datanet's latest Lance version differs from the one its newest adapter was trained
  on by at least ``PAYABLE_RETRAIN_MIN_CHANGE`` (fraction of rows added or removed, default 0: any change),
  so its train-and-attribute run is due. New datanets become dynamic partitions here too.
"""

import json
import os

import dagster as dg

from assets.partitions import datanet_partitions, partition_key
from orchestration.jobs import datanet_job, validate_job
from orchestration.resources import DataDirResource, KafkaResource
from payable import kafka_log
from pipelines.training.registry import AdapterRegistry
from pipelines.validate import checkpoint, materialize
from pipelines.validate.run import validate_dir
from schemas import topics


def pending_offsets(ends: dict[int, int], validated: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Partition -> (validated up to, end) for every partition with facts not validated yet."""
    return {p: (validated.get(p, 0), end) for p, end in sorted(ends.items()) if end > validated.get(p, 0)}


@dg.sensor(job=validate_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def new_chain_facts(context: dg.SensorEvaluationContext, kafka: KafkaResource,
                    data_dir: DataDirResource) -> dg.SensorResult | dg.SkipReason:
    kafka_log.ensure_topics(kafka.bootstrap, [topics.CHAIN_FACTS])
    ends = kafka_log.end_offsets(kafka.bootstrap, topics.CHAIN_FACTS)
    validated = checkpoint.load(validate_dir(data_dir.settings())).offsets
    pending = pending_offsets(ends, validated)
    if not pending:
        return dg.SkipReason("no chain facts past the validate checkpoint")
    run_key = "facts-" + json.dumps({p: end for p, (_, end) in pending.items()}, sort_keys=True)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key, tags={"payable/pending": str(pending)})])


def changed_fraction(trained: set[int], latest: set[int]) -> float:
    """Share of the trained rows added or removed since (1.0 when nothing was trained yet)."""
    if not trained:
        return 1.0 if latest else 0.0
    return len(trained ^ latest) / len(trained)


@dg.sensor(job=datanet_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def changed_datasets(context: dg.SensorEvaluationContext, data_dir: DataDirResource) -> dg.SensorResult:
    settings = data_dir.settings()
    threshold = float(os.environ.get("PAYABLE_RETRAIN_MIN_CHANGE", "0"))
    registry = AdapterRegistry(settings.adapters_dir)
    keys, requests = [], []
    for datanet_id in materialize.datanet_ids(settings.lance_dir):
        dataset = materialize.open_dataset(materialize.dataset_uri(settings.lance_dir, datanet_id))
        if dataset is None:
            continue
        keys.append(partition_key(datanet_id))
        record = registry.latest(datanet_id)
        if record is not None and record.dataset_version == dataset.version:
            continue
        latest = set(dataset.to_table(columns=["contribution_id"])["contribution_id"].to_pylist())
        trained = set() if record is None else set(
            dataset.checkout_version(record.dataset_version).to_table(columns=["contribution_id"])[
                "contribution_id"].to_pylist())
        if changed_fraction(trained, latest) > threshold:
            requests.append(dg.RunRequest(partition_key=partition_key(datanet_id),
                                          run_key=f"dn-{datanet_id}-v{dataset.version}"))
    new_keys = [k for k in keys if not context.instance.has_dynamic_partition(datanet_partitions.name, k)]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[datanet_partitions.build_add_request(new_keys)] if new_keys else [],
    )
