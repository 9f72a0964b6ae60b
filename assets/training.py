"""Training assets: one LoRA adapter per datanet dataset version, with its lineage and loss curve."""

import dagster as dg

from assets.partitions import datanet_id_of, datanet_partitions
from assets.plots import curve
from assets.validation import datanet_datasets
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, stage_settings
from payable.errors import PayableError
from pipelines.training.access import train_granted
from pipelines.training.registry import AdapterRegistry

OWNERS = ["team:ml"]


@dg.asset(
    group_name="attribution", kinds={"pytorch", "lance"}, owners=OWNERS, deps=[datanet_datasets],
    partitions_def=datanet_partitions,
    description="Fine-tunes a LoRA adapter (peft) on the datanet's latest dataset version and registers it "
                "with its lineage (base model hash, dataset version, offsets, hyperparameters, metrics). "
                "A no-op when the dataset has not changed since the last adapter.",
)
def lora_adapters(context: dg.AssetExecutionContext, data_dir: DataDirResource, chain: ChainResource,
                  kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    datanet_id = datanet_id_of(context.partition_key)
    try:
        trained = train_granted(settings, datanet_id, show_progress=False)
    except PayableError as exc:  # AccessDenied, or no usable trainer key
        raise dg.Failure(str(exc)) from exc
    record = trained or AdapterRegistry(settings.adapters_dir).latest(datanet_id)
    if record is None:
        raise dg.Failure(f"datanet {datanet_id} has no dataset to train on yet")
    plot_path = settings.adapters_dir / f"dn-{datanet_id}" / record.adapter_id / "loss.png"
    return dg.MaterializeResult(metadata={
        "adapter_id": record.adapter_id,
        "trained_now": trained is not None,
        "dataset_version": record.dataset_version,
        "train_examples": record.num_train_examples,
        "eval_queries": record.num_eval_queries,
        **{name: round(float(value), 5) for name, value in record.metrics.items()},
        "loss_curve": curve(record.loss_curve, f"LoRA training loss, dn-{datanet_id}", "loss", save_to=plot_path),
    })


@dg.asset_check(asset=lora_adapters, description="Fine-tuning lowered the eval loss below the base model's.")
def adapter_improves_eval_loss(context: dg.AssetCheckExecutionContext,
                               data_dir: DataDirResource) -> dg.AssetCheckResult:
    record = AdapterRegistry(data_dir.settings().adapters_dir).latest(datanet_id_of(context.partition_key))
    if record is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "no adapter"})
    base, tuned = record.metrics["base_eval_loss"], record.metrics["eval_loss"]
    return dg.AssetCheckResult(passed=tuned < base, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"base_eval_loss": base, "eval_loss": tuned, "adapter_id": record.adapter_id})
