"""The adapter registry: one folder per adapter under ``Settings.adapters_dir``.

Layout: ``<adapters_dir>/dn-<datanet>/<adapter_id>/`` holding ``adapter.safetensors`` (final LoRA weights),
``checkpoints/step-<n>.safetensors`` (snapshots attribution averages over) and ``lineage.json`` (the
:class:`AdapterRecord`). The adapter id is a hash of everything that determines the weights, so a replay
of the log produces the same ids, and training twice on unchanged data is detected as a no-op.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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
    """``{"name", "hash", "spec"}`` of the base model."""
    training_arguments: dict
    eval_source: str
    """``stored`` (the datanet's eval set) or ``holdout`` (held-out contributions)."""
    num_train_examples: int
    num_eval_queries: int
    metrics: dict[str, float]
    loss_curve: list[float] = field(repr=False)
    checkpoints: list[CheckpointRecord]
    weights_file: str = "adapter.safetensors"
    access_grant: str | None = None
    """Chain event id of the AccessGranted it was trained under (permissioned datanets); ``None``: public."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> AdapterRecord:
        doc = json.loads(text)
        doc["checkpoints"] = [CheckpointRecord(**c) for c in doc["checkpoints"]]
        return cls(**doc)


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

    def save(self, record: AdapterRecord, weights: dict[str, torch.Tensor],
             checkpoints: list[dict[str, torch.Tensor]]) -> Path:
        """Writes weights, checkpoints, then lineage last, through a temporary folder renamed into place."""
        final = self.folder(record.datanet_id, record.adapter_id)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "checkpoints").mkdir(parents=True)
        save_file(weights, str(tmp / record.weights_file))
        for ckpt, state in zip(record.checkpoints, checkpoints, strict=True):
            save_file(state, str(tmp / ckpt.file))
        (tmp / "lineage.json").write_text(record.to_json())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def record(self, datanet_id: int, adapter_id: str) -> AdapterRecord:
        return AdapterRecord.from_json((self.folder(datanet_id, adapter_id) / "lineage.json").read_text())

    def weights(self, record: AdapterRecord) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder(record.datanet_id, record.adapter_id) / record.weights_file))

    def checkpoint_weights(self, record: AdapterRecord) -> list[dict[str, torch.Tensor]]:
        folder = self.folder(record.datanet_id, record.adapter_id)
        return [load_file(str(folder / c.file)) for c in record.checkpoints]

    def records(self, datanet_id: int) -> list[AdapterRecord]:
        """All adapters of a datanet, oldest dataset version first."""
        files = sorted((self.root / f"dn-{datanet_id}").glob("*/lineage.json"))
        found = [AdapterRecord.from_json(f.read_text()) for f in files]
        return sorted(found, key=lambda r: (r.dataset_version, r.adapter_id))

    def latest(self, datanet_id: int) -> AdapterRecord | None:
        found = self.records(datanet_id)
        return found[-1] if found else None
