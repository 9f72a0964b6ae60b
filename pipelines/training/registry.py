"""The adapter registry: one folder per adapter under ``Settings.adapters_dir``, in the standard PEFT format.

Layout of ``<adapters_dir>/dn-<datanet>/<adapter_id>/``:
- ``adapter_config.json`` + ``adapter_model.safetensors`` (+ peft's ``README.md`` model card): exactly what
  ``PeftModel.save_pretrained`` writes, so ``PeftModel.from_pretrained(base, folder)`` loads the adapter
  unchanged, as do vLLM/LoRAX-style servers. ``base_model_name_or_path`` is the base model's registry name
  (``pipelines.training.base_model``);
- ``checkpoints/step-<n>.safetensors``: LoRA snapshots along training, which attribution averages over;
- ``lineage.json``: the :class:`AdapterRecord` (written last: its presence means the folder is complete);
- ``timing.json``: wall seconds of the run (training, per step): a report, not lineage (it varies run to run).
The adapter id is a hash of everything that determines the weights, so a replay of the log produces the same
ids, and training twice on unchanged data is detected as a no-op.

Folders of the earlier layout (``adapter.safetensors``, no ``adapter_config.json``) are migrated in place the
first time the registry reads them (:meth:`AdapterRegistry.migrate`).

For servers: :func:`locate_adapter` turns an adapter id (or folder) into ``(base model spec, PEFT folder, lineage
dict)``; load the base with ``base_model.load_model(spec)`` / ``load_tokenizer(spec)`` and the adapter with
``PeftModel.from_pretrained(model, folder)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.training.arguments import BaseModelSpec, TrainingArguments

if TYPE_CHECKING:  # reading lineage (the no-op path, the audit stage) never imports torch
    import torch
    from peft import PeftModel

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter.safetensors"
TIMING_FILE = "timing.json"


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    learning_rate: float
    file: str
    """Path relative to the adapter folder."""


@dataclass(frozen=True)
class AdapterRecord:
    """Lineage of one adapter: what it was trained from, how, and how well it does."""

    adapter_id: str
    datanet_id: int
    dataset_uri: str
    dataset_version: int
    dataset_fingerprint: str
    offsets: dict[str, str]
    base_model: dict
    """``{"name", "hash", "spec", "architecture", "chat_template"}`` of the base model; the hash covers its
    real weights."""
    training_arguments: dict
    """Every training setting (:meth:`TrainingArguments.to_dict`, target modules resolved)."""
    eval_source: str
    """``stored`` (the datanet's eval set) or ``holdout`` (held-out contributions)."""
    num_train_examples: int
    num_eval_queries: int
    metrics: dict[str, float]
    """Base vs tuned eval loss and perplexity, final training loss, steps."""
    loss_curve: list[float] = field(repr=False)
    checkpoints: list[CheckpointRecord]
    generations: list[dict[str, str]] = field(default_factory=list)
    """Greedy continuations of a few eval prompts by the base and the tuned model (``evaluation``)."""
    access_grant: str | None = None
    """Chain event id of the AccessGranted it was trained under (permissioned datanets); ``None``: public."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> AdapterRecord:
        doc = json.loads(text)
        doc.pop("weights_file", None)  # earlier layout
        doc["checkpoints"] = [CheckpointRecord(**c) for c in doc["checkpoints"]]
        return cls(**doc)

    @property
    def arguments(self) -> TrainingArguments:
        return TrainingArguments.from_dict(self.training_arguments)


def adapter_id(base_hash: str, datanet_id: int, train_fingerprint: str, eval_fingerprint: str, args: dict) -> str:
    """Deterministic id: a hash of the inputs that fix the adapter's weights and metrics."""
    doc = json.dumps([base_hash, datanet_id, train_fingerprint, eval_fingerprint, args], sort_keys=True)
    return "ad-" + hashlib.sha256(doc.encode()).hexdigest()[:20]


class AdapterRegistry:
    """Reads and writes adapters under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, datanet_id: int, adapter_id: str) -> Path:
        return self.root / f"dn-{datanet_id}" / adapter_id

    def exists(self, datanet_id: int, adapter_id: str) -> bool:
        return (self.folder(datanet_id, adapter_id) / "lineage.json").exists()

    def save(self, record: AdapterRecord, model: PeftModel, checkpoints: list[dict[str, torch.Tensor]],
             seconds: dict[str, float]) -> Path:
        """Writes the PEFT folder, checkpoints, timing, then lineage last, through a temporary folder renamed
        into place."""
        final = self.folder(record.datanet_id, record.adapter_id)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        from safetensors.torch import save_file

        # embedding layers are never adapted; "auto" would look the base model's name up on the Hub
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        (tmp / "checkpoints").mkdir()
        for ckpt, state in zip(record.checkpoints, checkpoints, strict=True):
            save_file(state, str(tmp / ckpt.file))
        (tmp / TIMING_FILE).write_text(json.dumps(seconds, sort_keys=True))
        (tmp / "lineage.json").write_text(record.to_json())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def record(self, datanet_id: int, adapter_id: str) -> AdapterRecord:
        folder = self.folder(datanet_id, adapter_id)
        if not (folder / "lineage.json").exists():
            raise LookupError(f"datanet {datanet_id} has no adapter {adapter_id}")
        return self.migrate(folder)

    def timing(self, record: AdapterRecord) -> dict[str, float]:
        """Wall seconds of the run that trained ``record`` (empty for adapters trained before they were kept)."""
        path = self.folder(record.datanet_id, record.adapter_id) / TIMING_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def checkpoint_weights(self, record: AdapterRecord) -> list[dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        folder = self.folder(record.datanet_id, record.adapter_id)
        return [load_file(str(folder / c.file)) for c in record.checkpoints]

    def records(self, datanet_id: int) -> list[AdapterRecord]:
        """All adapters of a datanet, oldest dataset version first."""
        found = [self.migrate(f.parent) for f in sorted((self.root / f"dn-{datanet_id}").glob("*/lineage.json"))]
        return sorted(found, key=lambda r: (r.dataset_version, r.adapter_id))

    def latest(self, datanet_id: int) -> AdapterRecord | None:
        found = self.records(datanet_id)
        return found[-1] if found else None

    @staticmethod
    def migrate(folder: Path) -> AdapterRecord:
        """Reads an adapter folder, first rewriting the earlier layout into the PEFT one (idempotent; the
        weights are the same tensors, re-saved with the metadata ``save_pretrained`` writes)."""
        record = AdapterRecord.from_json((folder / "lineage.json").read_text())
        legacy = folder / LEGACY_WEIGHTS_FILE
        if legacy.exists():
            from safetensors.torch import load_file, save_file

            from pipelines.training.lora import lora_config

            config = lora_config(record.arguments, record.base_model.get("architecture", "gpt2"))
            config.inference_mode = True
            config.save_pretrained(str(folder))
            save_file(load_file(str(legacy)), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
            (folder / "lineage.json").write_text(record.to_json())
            legacy.unlink()
        return record


@dataclass(frozen=True)
class AdapterLocation:
    """What a server needs to load an adapter: its base model, its PEFT folder, and its lineage."""

    base: BaseModelSpec
    folder: Path
    lineage: dict


def locate_adapter(adapters_dir: Path, adapter: str | Path) -> AdapterLocation:
    """An adapter by id (``ad-…``, searched under every datanet) or by folder path; LookupError if unknown."""
    path = Path(adapter)
    if not (path / "lineage.json").exists():
        matches = sorted(Path(adapters_dir).glob(f"dn-*/{adapter}/lineage.json"))
        if not matches:
            raise LookupError(f"no adapter {adapter} under {adapters_dir}")
        path = matches[0].parent
    record = AdapterRegistry.migrate(path)
    return AdapterLocation(base=record.arguments.base, folder=path.resolve(), lineage=json.loads(record.to_json()))
