"""Where the validate stage stands: offsets done, datanets known, history segments, the run in flight.

Two small JSON files under ``<data_dir>/validate``, each replaced atomically (write, fsync, rename):

* ``checkpoint.json``, the commit point of a run: next offset per partition, datanets, segments, and
  the sketch fingerprint the segments were made with (``ValidateConfig.sketch_fingerprint``);
* ``pending.json``, the intent of the run in flight (its exact offset ranges, and whether its verdicts
  were already produced), written before anything leaves the run and removed after the checkpoint.

A run that crashed is resumed from its intent with the same ranges, so it recomputes the same
decisions; its Lance commits are recognised by run id and never repeated (see ``materialize``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo

CHECKPOINT = "checkpoint.json"
PENDING = "pending.json"


@dataclass
class Checkpoint:
    """Everything earlier runs established, as of the end of the last committed run."""

    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to process
    datanets: dict[int, DatanetInfo] = field(default_factory=dict)
    segments: dict[int, list[str]] = field(default_factory=dict)  # datanet -> history segment paths
    sketches: str | None = None  # sketch fingerprint of every segment; None: unknown (written before it)


@dataclass
class Intent:
    """The run in flight: its id, exact ranges, and how far its side effects got."""

    run_id: str
    ranges: dict[int, tuple[int, int]]
    produced: bool = False


def run_id(ranges: dict[int, tuple[int, int]], config: ValidateConfig) -> str:
    """Deterministic: the same offset ranges under the same rules are the same run."""
    doc = [[p, lo, hi] for p, (lo, hi) in sorted(ranges.items())], config.rules_version, config.fingerprint
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:20]


def load(root: Path) -> Checkpoint:
    path = root / CHECKPOINT
    if not path.exists():
        return Checkpoint()
    doc = json.loads(path.read_text())
    return Checkpoint(
        offsets={int(p): o for p, o in doc["offsets"].items()},
        datanets={int(d): DatanetInfo.from_json(info) for d, info in doc["datanets"].items()},
        segments={int(d): paths for d, paths in doc["segments"].items()},
        sketches=doc.get("sketches"),
    )


def save(root: Path, checkpoint: Checkpoint) -> None:
    doc = {"offsets": checkpoint.offsets, "segments": checkpoint.segments, "sketches": checkpoint.sketches,
           "datanets": {d: info.to_json() for d, info in checkpoint.datanets.items()}}
    _atomic_write(root / CHECKPOINT, doc)


def load_intent(root: Path) -> Intent | None:
    path = root / PENDING
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return Intent(doc["run_id"], {int(p): (lo, hi) for p, (lo, hi) in doc["ranges"].items()}, doc["produced"])


def save_intent(root: Path, intent: Intent) -> None:
    _atomic_write(root / PENDING, {"run_id": intent.run_id, "produced": intent.produced,
                                   "ranges": {p: list(r) for p, r in intent.ranges.items()}})


def clear_intent(root: Path) -> None:
    (root / PENDING).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One validate run at a time per data directory (a second one waits)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(doc, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
