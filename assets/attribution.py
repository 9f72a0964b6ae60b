"""Attribution assets: every accepted contribution's influence on its datanet's model (Proof of Attribution)."""

from dataclasses import replace

import dagster as dg
import pyarrow.compute as pc

from assets.partitions import datanet_id_of, datanet_partitions
from assets.plots import histogram, table_md
from assets.training import lora_adapters
from orchestration.resources import DataDirResource, KafkaResource
from pipelines import log_views
from pipelines.attribution import Attribution, ScoreArguments, Unscorable, attribute
from pipelines.attribution.arguments import QualityArguments
from pipelines.attribution.counterfactual import Refit
from pipelines.attribution.store import adapter_store_bytes
from pipelines.training.registry import AdapterRegistry

OWNERS = ["team:ml"]


class InfluenceConfig(dg.Config):
    """Run configuration of ``influence_scores`` (the launchpad's config editor)."""

    lds_subsets: int = QualityArguments().lds_subsets
    """Retrained subsets behind the run's LDS (one LoRA fit each); 0 leaves the LDS unmeasured."""
    gradient_batch: int | None = None
    """Examples per gradient batch; unset: as many as ``memory_budget_mb`` holds on the adapter's base model."""
    memory_budget_mb: int = ScoreArguments().memory_budget_mb
    """Memory one gradient batch may take beyond the model (per-example gradients of a real model fill it)."""
    num_threads: int = ScoreArguments().num_threads
    """Torch threads of the gradient passes (1: a shared machine; its core count on a machine of its own)."""


@dg.asset(
    group_name="attribution", kinds={"pytorch", "beam", "lance"}, owners=OWNERS, deps=[lora_adapters],
    partitions_def=datanet_partitions,
    description="Influence of each accepted contribution on the adapter's eval loss (DataInf / TracIn / TRAK "
                "on LoRA gradients), aggregated per contribution and contributor, with the eval queries each "
                "helped or hurt; harmful contributions are flagged (bootstrap interval below zero, negative at "
                "every checkpoint, a robust outlier) and refitted without, the evidence the penalty stage needs; "
                "the run's quality: LDS over retrained subsets, AUC on the operator's revealed canaries.",
)
def influence_scores(context: dg.AssetExecutionContext, config: InfluenceConfig, data_dir: DataDirResource,
                     kafka: KafkaResource) -> dg.MaterializeResult:
    settings = replace(data_dir.settings(), kafka_bootstrap=kafka.bootstrap)
    datanet_id = datanet_id_of(context.partition_key)
    args = ScoreArguments(batch_size=config.gradient_batch, memory_budget_mb=config.memory_budget_mb,
                          num_threads=config.num_threads,
                          quality=replace(QualityArguments(), lds_subsets=config.lds_subsets))
    try:
        result = attribute(settings, datanet_id, args=args, canaries_from_log=True)
    except Unscorable as exc:  # this datanet's partition fails alone; the others are scored and paid
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    table = result.table
    scores = table["score"].to_pylist()
    totals = table.group_by("contributor").aggregate([("score", "sum")]).sort_by([("score_sum", "descending")])
    harmful = table.filter(table["harmful"])
    return dg.MaterializeResult(metadata={
        "rows": table.num_rows,
        "methods": str(sorted(set(table["method"].to_pylist()))),
        "adapter_id": table["adapter_id"][0].as_py() if table.num_rows else "",
        "harmful_flagged": harmful.num_rows,
        "gradient_store_bytes": adapter_store_bytes(AdapterRegistry(settings.adapters_dir), datanet_id,
                                                    table["adapter_id"][0].as_py()) if table.num_rows else 0,
        "harmful_contribution_ids": str(harmful["contribution_id"].to_pylist()),
        "gradients_recomputed": result.gradients.recomputed, "gradients_reused": result.gradients.reused,
        "gradients_why": result.gradients.why,
        "gradient_batch": result.batch.describe(), "gradient_batch_size": result.batch.size,
        **refit_metadata(result.refit),
        **quality_metadata(result),
        "harm_evidence": table_md([{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}
                                   for r in harmful.select(EVIDENCE_COLUMNS).to_pylist()]),
        "score_min": float(pc.min(table["score"]).as_py()) if scores else 0.0,
        "score_max": float(pc.max(table["score"]).as_py()) if scores else 0.0,
        "influence_distribution": histogram(
            scores, f"Influence per contribution, dn-{datanet_id}", "score (eval-loss reduction)",
            save_to=settings.data_dir / "reports" / f"influence-dn-{datanet_id}.png"),
        "influence_by_contributor": table_md([{"contributor": r["contributor"], "score": round(r["score_sum"], 6)}
                                              for r in totals.to_pylist()]),
    })


def quality_metadata(result: Attribution) -> dict:
    """The run's quality figures: LDS (NaN: unmeasured) and its cost, the canary AUC or why it is unmeasured."""
    auc = result.table["canary_auc"][0].as_py() if result.table.num_rows else None
    return {"lds": dg.FloatMetadataValue(result.lds.value), "lds_subsets": result.lds.subsets,
            "lds_seconds": round(result.lds.seconds, 2), "canary_auc": result.canaries.describe(auc)}


EVIDENCE_COLUMNS = ["contribution_id", "contributor", "score", "score_low", "score_high", "robust_z", "refit_delta",
                    "refit_spread"]


def refit_metadata(refit: Refit | None) -> dict:
    """The counterfactual check in numbers (0 / empty when nothing was flagged, so no refit ran)."""
    if refit is None:
        return {"refit_removed": 0, "refit_delta": 0.0, "refit_spread": 0.0, "refit_seconds": 0.0}
    return {"refit_removed": len(refit.removed), "refit_delta": refit.delta, "refit_spread": refit.spread,
            "refit_seconds": round(refit.seconds, 2)}


@dg.asset_check(asset=influence_scores, description="Every currently accepted contribution of the datanet "
                "has exactly one score per method, and nothing else is scored.")
def every_accepted_contribution_scored(context: dg.AssetCheckExecutionContext, data_dir: DataDirResource,
                                       kafka: KafkaResource) -> dg.AssetCheckResult:
    import lance

    from pipelines.attribution.table import influence_uri

    datanet_id = datanet_id_of(context.partition_key)
    accepted = log_views.accepted_contributions(kafka.bootstrap, datanet_id)
    table = lance.dataset(influence_uri(data_dir.settings().lance_dir)).to_table(
        filter=f"datanet_id = {datanet_id}", columns=["contribution_id", "method", "dataset_version"])
    latest = pc.max(table["dataset_version"]).as_py()
    table = table.filter(pc.equal(table["dataset_version"], latest))
    problems = {}
    for method in sorted(set(table["method"].to_pylist())):
        ids = table.filter(pc.equal(table["method"], method))["contribution_id"].to_pylist()
        missing, extra = accepted - set(ids), set(ids) - accepted
        if missing or extra or len(ids) != len(set(ids)):
            problems[method] = {"missing": sorted(missing)[:20], "unexpected": sorted(extra)[:20],
                                "duplicated": len(ids) - len(set(ids))}
    return dg.AssetCheckResult(passed=not problems, metadata={"accepted": len(accepted), "problems": str(problems)})
