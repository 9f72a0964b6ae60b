"""Where adapters come from: adapter id -> (PEFT folder, lineage). The one module that knows the registry's layout.

An adapter is a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``, as peft's
``save_pretrained`` writes them) with ``lineage.json`` beside them, under
``<adapters_dir>/dn-<datanet>/<adapter_id>/``. Wiring in another registry (an object store, a model
registry service) replaces this module and nothing else.

The folder tree is scanned into an index at most once per ``refresh_s``, and again on an unknown id, so a
newly trained adapter (and the new target of its datanet's ``dn-<id>`` alias) is served within seconds
without a scan per request.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.training.arguments import BaseModelSpec
from serving.lora import CONFIG_FILE

LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class AdapterEntry:
    """What the server needs to know about one adapter before loading it."""

    adapter_id: str
    datanet_id: int
    dataset_version: int
    base_model_hash: str | None
    folder: Path
    created: int
    """Unix time the lineage was written (the ``created`` of /v1/models)."""
    base_model: BaseModelSpec | None = None
    """The base it was trained on as its lineage records it (``spec``, else its ``name``), to rebuild that base."""


def _base_spec(base: dict) -> BaseModelSpec | None:
    if isinstance(base.get("spec"), dict):
        return BaseModelSpec(**base["spec"])
    return BaseModelSpec(name=str(base["name"])) if base.get("name") else None


def _read_entry(lineage_file: Path) -> AdapterEntry | None:
    try:
        doc = json.loads(lineage_file.read_text())
        base = doc.get("base_model") or {}
        return AdapterEntry(
            adapter_id=str(doc["adapter_id"]), datanet_id=int(doc["datanet_id"]),
            dataset_version=int(doc["dataset_version"]),
            base_model_hash=base.get("hash") if isinstance(base, dict) else None,
            folder=lineage_file.parent, created=int(lineage_file.stat().st_mtime),
            base_model=_base_spec(base) if isinstance(base, dict) else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable lineage: the folder is not an adapter the server can account for


def fits(entry: AdapterEntry, base_hash: str | None) -> bool:
    """Whether ``entry`` was trained on the base ``base_hash`` (any base when None; a lineage without a base hash
    fits any, and the factor shapes are checked at load)."""
    return base_hash is None or entry.base_model_hash in (None, base_hash)


class AdapterSource:
    """The adapters under one registry root, indexed by id and by datanet."""

    def __init__(self, root: Path, refresh_s: float = 2.0) -> None:
        self.root = Path(root)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._by_id: dict[str, AdapterEntry] = {}
        self._scanned_at = -float("inf")

    def _scan(self) -> None:
        found = {}
        for config in self.root.glob(f"dn-*/*/{CONFIG_FILE}"):
            entry = _read_entry(config.parent / LINEAGE_FILE)
            if entry is not None and entry.folder.name == entry.adapter_id:
                found[entry.adapter_id] = entry
        with self._lock:
            self._by_id, self._scanned_at = found, time.monotonic()

    def _fresh(self, force: bool = False) -> dict[str, AdapterEntry]:
        if force or time.monotonic() - self._scanned_at > self.refresh_s:
            self._scan()
        return self._by_id

    def entries(self, base_hash: str | None = None) -> list[AdapterEntry]:
        """Every adapter of every datanet (with ``base_hash``: those trained on that base), by datanet then version."""
        return sorted((e for e in self._fresh().values() if fits(e, base_hash)),
                      key=lambda e: (e.datanet_id, e.dataset_version, e.adapter_id))

    def get(self, adapter_id: str) -> AdapterEntry | None:
        entry = self._fresh().get(adapter_id)
        if entry is None and time.monotonic() - self._scanned_at > 0.2:
            entry = self._fresh(force=True).get(adapter_id)
        return entry

    def latest(self, datanet_id: int, base_hash: str | None = None) -> AdapterEntry | None:
        """The adapter of the datanet's newest dataset version (what the alias ``dn-<id>`` serves), among those
        trained on ``base_hash`` when given: a server's alias names an adapter it can serve."""
        mine = [e for e in self._fresh().values() if e.datanet_id == datanet_id and fits(e, base_hash)]
        return max(mine, key=lambda e: (e.dataset_version, e.created, e.adapter_id), default=None)
