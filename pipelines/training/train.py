"""Train entry points: fit an adapter to a datanet's dataset version and register it, once."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from payable.settings import Settings
from pipelines.training.arguments import TrainingArguments, resolve_arguments
from pipelines.training.base_model import architecture, base_model_hash, load_model, load_tokenizer, lora_targets
from pipelines.training.data import (
    DatasetVersion,
    datanet_spec,
    dataset_of,
    fingerprint,
    fingerprint_queries,
    read_version,
    split_train_eval,
    sync_eval_queries,
    tokenize,
)
from pipelines.training.registry import AdapterRecord, AdapterRegistry, CheckpointRecord, adapter_id

if TYPE_CHECKING:
    import torch
    from peft import PeftModel


class Trained(NamedTuple):
    """The adapter for a dataset version and settings, and whether this call trained it (False: it was already
    registered, nothing changed)."""

    record: AdapterRecord
    trained_now: bool


def resolved(args: TrainingArguments) -> TrainingArguments:
    """``args`` with the architecture's default LoRA targets filled in (they are part of the adapter id)."""
    if args.target_modules:
        return args
    return replace(args, target_modules=lora_targets(architecture(args.base)))


def train_dataset_version(registry: AdapterRegistry, lance_dir: Path, datanet_id: int, dataset: DatasetVersion,
                          args: TrainingArguments, show_progress: bool = True,
                          access_grant: str | None = None) -> Trained:
    """Trains and registers an adapter for ``dataset``, unless that exact adapter is registered already.

    ``access_grant``: the chain event id of the grant the trainer holds on a permissioned datanet."""
    train_rows, queries = split_train_eval(dataset.table, lance_dir, datanet_id, args.eval_holdout_mod)
    args = resolved(args)
    base_hash = base_model_hash(args.base, cache_dir=registry.root)
    new_id = adapter_id(base_hash, datanet_id, fingerprint(train_rows), fingerprint_queries(queries), args.to_dict())
    if registry.exists(datanet_id, new_id):
        return Trained(registry.record(datanet_id, new_id), trained_now=False)
    # torch, transformers and peft load only past this point: the no-op path above does not pay for them
    from pipelines.training.evaluation import sample_generations
    from pipelines.training.lora import train_lora

    tokenizer = load_tokenizer(args.base)
    train = tokenize(train_rows["text"].to_pylist(), tokenizer, args.max_length)
    evals = tokenize(queries["text"].to_pylist(), tokenizer, args.max_length)
    result = train_lora(load_model(args.base, args.quantization), train, evals, args, show_progress=show_progress)
    record = AdapterRecord(
        adapter_id=new_id, datanet_id=datanet_id, dataset_uri=dataset.uri, dataset_version=dataset.version,
        dataset_fingerprint=fingerprint(dataset.table), offsets=dataset.offsets,
        base_model={"name": args.base.name, "hash": base_hash, "spec": args.to_dict()["base"],
                    "architecture": result.model.config.model_type, "chat_template": bool(tokenizer.chat_template)},
        training_arguments=args.to_dict(), eval_source="holdout" if len(train_rows) < len(dataset.table) else "stored",
        num_train_examples=len(train), num_eval_queries=queries.num_rows, metrics=result.metrics,
        loss_curve=result.loss_curve, access_grant=access_grant,
        checkpoints=[CheckpointRecord(c.step, c.learning_rate, f"checkpoints/step-{c.step}.safetensors")
                     for c in result.checkpoints],
        generations=sample_generations(result.model, tokenizer, queries["text"].to_pylist(), args),
    )
    registry.save(record, result.model, [c.state for c in result.checkpoints], result.seconds)
    return Trained(record, trained_now=True)


def launch_arguments(settings: Settings, datanet_id: int, overrides: dict | None = None) -> TrainingArguments:
    """The arguments of a training launch (CLI or Dagster): built-in defaults < the datanet spec's ``training``
    defaults < ``overrides`` (flat settings, ``arguments.SETTINGS``). Reads the spec from the log and syncs its
    eval queries into the Lance eval set on the way."""
    dataset_of(settings.lance_dir, datanet_id)  # an unknown datanet fails before the log is read
    spec = datanet_spec(settings, datanet_id)
    sync_eval_queries(settings, datanet_id, spec)
    return resolve_arguments(spec.training if spec else None, overrides)


def train_latest(settings: Settings, datanet_id: int, args: TrainingArguments | None = None,
                 show_progress: bool = True, access_grant: str | None = None) -> Trained:
    """Trains on the latest version of ``dn-<datanet_id>.lance`` (a no-op when nothing changed since last time).

    Entry points go through :func:`pipelines.training.access.train_granted`, which checks the trainer's
    access to the datanet first."""
    dataset = read_version(dataset_of(settings.lance_dir, datanet_id))
    return train_dataset_version(AdapterRegistry(settings.adapters_dir), settings.lance_dir, datanet_id, dataset,
                                 args or TrainingArguments(), show_progress=show_progress, access_grant=access_grant)


def load_adapter(registry: AdapterRegistry, record: AdapterRecord) -> tuple[PeftModel, list[dict[str, torch.Tensor]]]:
    """The registered adapter loaded by plain peft onto its base model (LoRA factors trainable, so attribution
    can take gradients), plus its checkpoints' weights (oldest first)."""
    from peft import PeftModel

    args = record.arguments
    if base_model_hash(args.base, cache_dir=registry.root) != record.base_model["hash"]:
        raise ValueError(f"base model of {record.adapter_id} does not match its lineage hash")
    folder = registry.folder(record.datanet_id, record.adapter_id)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 API deprecated for v6
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(load_model(args.base, args.quantization), str(folder), is_trainable=True)
    return model.eval(), registry.checkpoint_weights(record)
