"""Commitment assets: every adapter and influence run of a datanet anchored on-chain (Proof of Attribution)."""

import dagster as dg

from assets.attribution import influence_scores
from assets.partitions import datanet_id_of, datanet_partitions
from assets.plots import table_md
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, deployment, stage_settings
from pipelines.commitments.publisher import commit_all

OWNERS = ["team:ml"]


@dg.asset(
    group_name="attribution", kinds={"ethereum", "kafka"}, owners=OWNERS, deps=[influence_scores],
    partitions_def=datanet_partitions, retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    description="Commits the datanet's adapters (dataset version root over (contribution, content hash), base "
                "model, weights, eval set, training arguments) and influence runs (root over (contribution, "
                "score)) to the AttributionRegistry, exactly once each (outbox: record and intent on the log "
                "before the transaction, reconciled with the chain on restart).",
)
def model_commitments(context: dg.AssetExecutionContext, data_dir: DataDirResource, chain: ChainResource,
                      kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    result = commit_all(settings, deployment(settings), [datanet_id_of(context.partition_key)])
    rows = [{"commitment": c.commitment_id[:14] + "…", "what": getattr(c, "run", None) or c.adapter_id,
             "state": s.state, "tx": ", ".join(h[:12] + "…" for h in s.tx_hashes)}
            for c, s in zip(result.commitments, result.steps, strict=False)]
    if not result.ok:
        raise dg.Failure("some commitments are not on-chain; a retry resumes them", metadata={"steps": table_md(rows)})
    return dg.MaterializeResult(metadata={
        "commitments": len(result.commitments),
        "steps": table_md(rows),
        "tx_hashes": str([h for s in result.steps for h in s.tx_hashes]),
    })
