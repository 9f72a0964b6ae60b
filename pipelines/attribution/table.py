"""The influence table: one row per accepted contribution per (dataset version, adapter, method).

Stored at ``<lance_dir>/influence.lance`` for all datanets. Writing a run replaces the rows of the same
(datanet, dataset version, adapter, method), so re-running attribution is idempotent.
"""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa

from schemas.influence import INFLUENCE


def influence_uri(lance_dir: Path) -> str:
    return str(Path(lance_dir) / "influence.lance")


def write_influence(lance_dir: Path, table: pa.Table) -> str:
    """Replaces the rows of the runs present in ``table`` and appends ``table``."""
    uri = influence_uri(lance_dir)
    table = table.cast(INFLUENCE)
    if not Path(uri).exists():
        lance.write_dataset(table, uri, schema=INFLUENCE)
        return uri
    ds = lance.dataset(uri)
    keys = ("datanet_id", "dataset_version", "adapter_id", "method")
    runs = set(zip(*(table[c].to_pylist() for c in keys), strict=True))
    for d, v, a, m in sorted(runs):
        ds.delete(f"datanet_id = {int(d)} AND dataset_version = {int(v)} AND adapter_id = '{a}' AND method = '{m}'")
    lance.write_dataset(table, uri, mode="append")
    return uri


def harmful_contributions(table: pa.Table) -> pa.Table:
    """The rows the penalty stage acts on, with their evidence (the queries they hurt)."""
    return table.filter(table["harmful"])
