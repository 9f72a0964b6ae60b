"""Train entry points: fit an adapter to a datanet's dataset version and register it, once."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from peft import PeftModel

from payable.settings import Settings
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import base_model_hash, build_base_model, build_tokenizer
from pipelines.training.data import (
    DatasetVersion,
    fingerprint,
    fingerprint_queries,
    read_version,
    split_train_eval,
    tokenize,
)
from pipelines.training.lora import attach_lora, train_lora
from pipelines.training.registry import AdapterRecord, AdapterRegistry, CheckpointRecord, adapter_id
from pipelines.validate import materialize

BASE_MODEL_NAME = "tiny-gpt2"


def train_dataset_version(registry: AdapterRegistry, lance_dir: Path, datanet_id: int, dataset: DatasetVersion,
                          args: TrainingArguments, show_progress: bool = True,
                          access_grant: str | None = None) -> AdapterRecord | None:
    """Trains and registers an adapter for ``dataset``; returns ``None`` if that exact adapter is registered.

    ``access_grant``: the chain event id of the grant the trainer holds on a permissioned datanet."""
    train_rows, queries = split_train_eval(dataset.table, lance_dir, datanet_id, args.eval_holdout_mod)
    base_hash = base_model_hash(args.base)
    eval_fp = fingerprint_queries(queries)
    new_id = adapter_id(base_hash, datanet_id, fingerprint(train_rows), eval_fp, args.to_dict())
    if registry.exists(datanet_id, new_id):
        return None
    tokenizer = build_tokenizer(args.base.vocab_size)
    train = tokenize(train_rows["text"].to_pylist(), tokenizer, args.max_length)
    evals = tokenize(queries["text"].to_pylist(), tokenizer, args.max_length)
    result = train_lora(build_base_model(args.base), train, evals, args, show_progress=show_progress)
    record = AdapterRecord(
        adapter_id=new_id, datanet_id=datanet_id, dataset_uri=dataset.uri, dataset_version=dataset.version,
        dataset_fingerprint=fingerprint(dataset.table), offsets=dataset.offsets,
        base_model={"name": BASE_MODEL_NAME, "hash": base_hash, "spec": asdict(args.base)},
        training_arguments=args.to_dict(), eval_source="holdout" if len(train_rows) < len(dataset.table) else "stored",
        num_train_examples=len(train), num_eval_queries=queries.num_rows, metrics=result.metrics,
        loss_curve=result.loss_curve, access_grant=access_grant,
        checkpoints=[CheckpointRecord(c.step, c.learning_rate, f"checkpoints/step-{c.step}.safetensors")
                     for c in result.checkpoints],
    )
    registry.save(record, result.checkpoints[-1].state, [c.state for c in result.checkpoints])
    return record


def train_latest(settings: Settings, datanet_id: int, args: TrainingArguments | None = None,
                 show_progress: bool = True, access_grant: str | None = None) -> AdapterRecord | None:
    """Trains on the latest version of ``dn-<datanet_id>.lance``; ``None`` when nothing changed since last time.

    Entry points go through :func:`pipelines.training.access.train_granted`, which checks the trainer's
    access to the datanet first."""
    args = args or TrainingArguments()
    dataset = read_version(materialize.dataset_uri(settings.lance_dir, datanet_id))
    return train_dataset_version(AdapterRegistry(settings.adapters_dir), settings.lance_dir, datanet_id, dataset, args,
                                 show_progress=show_progress, access_grant=access_grant)


def load_adapter(registry: AdapterRegistry, record: AdapterRecord) -> tuple[PeftModel, list[dict[str, torch.Tensor]]]:
    """The registered adapter on its base model, plus its checkpoints' weights (oldest first)."""
    args = TrainingArguments.from_dict(record.training_arguments)
    if base_model_hash(args.base) != record.base_model["hash"]:
        raise ValueError(f"base model of {record.adapter_id} does not match its lineage hash")
    model = attach_lora(build_base_model(args.base), args, registry.weights(record))
    return model, registry.checkpoint_weights(record)
