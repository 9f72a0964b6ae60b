"""Training assets: one LoRA adapter per datanet dataset version, with its lineage, evaluation and loss curve.

Every training setting is a field of :class:`TrainingConfig`, so a training run is launched from the Dagster
launchpad with a form (base model, LoRA r/alpha/dropout/targets, learning rate, epochs, max length, seed,
quantization); unset fields take the datanet spec's defaults, else the built-in ones
(``pipelines.training.arguments``).
"""

import dagster as dg
from pydantic import Field

from assets.partitions import datanet_id_of, datanet_partitions
from assets.plots import curve, table_md
from assets.validation import datanet_datasets
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, stage_settings
from payable.errors import PayableError
from pipelines.training import AdapterRegistry
from pipelines.training.access import train_granted

OWNERS = ["team:ml"]
_UNSET = " Unset: the datanet spec's default, else the built-in one."


class TrainingConfig(dg.Config):
    """The launchpad form of a training run (every field optional)."""

    base_model: str | None = Field(None, description="tiny-gpt2 (built-in), smollm2-135m-instruct, a local "
                                                     "Hugging Face model directory or a .gguf file." + _UNSET)
    lora_r: int | None = Field(None, ge=1, description="LoRA rank (built-in 8)." + _UNSET)
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha (built-in 16)." + _UNSET)
    lora_dropout: float | None = Field(None, ge=0.0, lt=1.0, description="LoRA dropout (built-in 0)." + _UNSET)
    target_modules: list[str] | None = Field(None, description="Modules to adapt (built-in: the architecture's, "
                                                               "e.g. q_proj..down_proj for Llama)." + _UNSET)
    learning_rate: float | None = Field(None, gt=0.0, description="Adam learning rate (built-in 0.01)." + _UNSET)
    epochs: int | None = Field(None, ge=1, description="Passes over the training rows (built-in 5)." + _UNSET)
    batch_size: int | None = Field(None, ge=1, description="Examples per step (built-in 8)." + _UNSET)
    max_length: int | None = Field(None, ge=2, description="Tokens per example (built-in 64)." + _UNSET)
    seed: int | None = Field(None, description="Seeds LoRA init, dropout and batch order (built-in 0)." + _UNSET)
    quantization: str | None = Field(None, description="none, or 4bit for QLoRA (CUDA only)." + _UNSET)
    num_checkpoints: int | None = Field(None, ge=1, description="Snapshots kept for attribution (built-in 3)."
                                        + _UNSET)
    num_threads: int | None = Field(None, ge=1, description="Torch threads (built-in 1: a shared machine; its "
                                                            "core count on a machine of its own)." + _UNSET)


@dg.asset(
    group_name="attribution", kinds={"pytorch", "lance"}, owners=OWNERS, deps=[datanet_datasets],
    partitions_def=datanet_partitions,
    description="Fine-tunes a LoRA adapter (peft) of the chosen base model on the datanet's latest dataset "
                "version and registers it in the PEFT format with its lineage (base model hash, dataset version, "
                "offsets, every setting, base vs tuned eval loss/perplexity, sample generations). A no-op when "
                "neither the dataset nor the settings changed since the last adapter.",
)
def lora_adapters(context: dg.AssetExecutionContext, config: TrainingConfig, data_dir: DataDirResource,
                  chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = stage_settings(data_dir, chain, kafka)
    datanet_id = datanet_id_of(context.partition_key)
    registry = AdapterRegistry(settings.adapters_dir)
    try:
        record, trained_now = train_granted(settings, datanet_id, config.model_dump(), show_progress=False)
    except (FileNotFoundError, ValueError, PayableError) as exc:  # bad settings, no dataset, AccessDenied
        raise dg.Failure(str(exc)) from None
    plot_path = registry.folder(datanet_id, record.adapter_id) / "loss.png"
    return dg.MaterializeResult(metadata={
        "adapter_id": record.adapter_id,
        "trained_now": trained_now,
        "access_grant": record.access_grant or "public datanet",
        "base_model": record.base_model["name"],
        "base_model_hash": record.base_model["hash"],
        "dataset_version": record.dataset_version,
        "train_examples": record.num_train_examples,
        "eval_queries": record.num_eval_queries,
        "training_arguments": dg.MetadataValue.json(record.training_arguments),
        **{name: round(float(value), 5) for name, value in record.metrics.items()},
        **{f"seconds_{name}": value for name, value in registry.timing(record).items()},
        "generations": table_md(record.generations) if record.generations else "",
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
                               metadata={"base_eval_loss": base, "eval_loss": tuned, "adapter_id": record.adapter_id,
                                         "base_eval_perplexity": record.metrics.get("base_eval_perplexity", 0.0),
                                         "eval_perplexity": record.metrics["eval_perplexity"]})
