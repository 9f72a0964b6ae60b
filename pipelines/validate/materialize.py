"""Lance datasets per datanet: one new version per run, tagged with the run and the offsets it covers.

The run id, offset ranges and a digest of the verdicts are transaction properties of the Lance commit
itself, so the version and what it covers are written in one atomic step. A rerun of a crashed run finds
its own run id on the latest version and does not commit again: a version is never duplicated, and
since the checkpoint only advances after the commit, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.compute as pc

from schemas.datasets import CONTRIBUTION_ROW

_DATANET_DIR = re.compile(r"dn-(\d+)\.lance")


@dataclass(frozen=True)
class Version:
    """What a committed (or already present) version covers."""

    version: int
    run_id: str
    offsets: dict[str, list[int]]
    verdict_digest: str


def dataset_uri(lance_dir: Path | str, datanet_id: int) -> str:
    return f"{str(lance_dir).rstrip('/')}/datanets/dn-{datanet_id}.lance"


def datanet_ids(lance_dir: Path) -> list[int]:
    """Ids of the datanets that have a materialized dataset under ``lance_dir`` (a local directory)."""
    folder = Path(lance_dir) / "datanets"
    found = (_DATANET_DIR.fullmatch(p.name) for p in folder.glob("dn-*.lance")) if folder.exists() else ()
    return sorted(int(m.group(1)) for m in found if m)


def open_dataset(uri: str) -> lance.LanceDataset | None:
    try:
        return lance.dataset(uri)
    except (FileNotFoundError, ValueError, OSError):
        return None


def latest_version(uri: str) -> Version | None:
    dataset = open_dataset(uri)
    if dataset is None:
        return None
    return _version_of(dataset, dataset.version)


def _version_of(dataset: lance.LanceDataset, version: int) -> Version | None:
    transaction = dataset.read_transaction(version)
    props = dict(getattr(transaction, "transaction_properties", None) or {})
    if "run_id" not in props:
        return None
    return Version(version, props["run_id"], json.loads(props["offsets"]), props["verdict_digest"])


def verdict_digest(verdict_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(verdict_ids)).encode()).hexdigest()


def commit(uri: str, rows: pa.Table, removed: list[str], *, run_id: str,
           offsets: dict[int, tuple[int, int]]) -> int | None:
    """Adds ``rows`` and drops the rows of ``removed`` verdicts as one version; idempotent per run.

    Returns the version that holds this run's changes, or None when there was nothing to write.
    """
    dataset = open_dataset(uri)
    if dataset is not None:
        done = _version_of(dataset, dataset.version)
        if done is not None and done.run_id == run_id:
            return done.version
    if rows.num_rows == 0 and not removed:
        return None
    contained = rows.column("verdict_id").to_pylist() + removed
    properties = {"run_id": run_id, "offsets": json.dumps({str(p): list(r) for p, r in sorted(offsets.items())}),
                  "verdicts": str(len(contained)), "verdict_digest": verdict_digest(contained),
                  "removed": json.dumps(removed)}
    rows = rows.cast(CONTRIBUTION_ROW)
    if dataset is None:
        return lance.write_dataset(rows, uri, CONTRIBUTION_ROW, mode="create",
                                   transaction_properties=properties).version
    if not removed:
        return lance.write_dataset(rows, uri, CONTRIBUTION_ROW, mode="append",
                                   transaction_properties=properties).version
    current = dataset.to_table()
    kept = current.filter(pc.invert(pc.is_in(current.column("verdict_id"), pa.array(removed, pa.string()))))
    return lance.write_dataset(pa.concat_tables([kept.cast(CONTRIBUTION_ROW), rows]), uri, CONTRIBUTION_ROW,
                               mode="overwrite", transaction_properties=properties).version
