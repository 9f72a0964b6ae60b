"""The influence table: one row per accepted contribution per (dataset version, adapter, method).

Stored at ``<lance_dir>/influence.lance`` for all datanets. Writing a run replaces the rows of the same
(datanet, dataset version, adapter, method), so re-running attribution is idempotent. A table written before
the quality columns existed stays readable (``read_influence`` gives them as nulls) and is upgraded in place the
next time a run is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.compute as pc

from schemas.influence import INFLUENCE

RUN_KEY = ("datanet_id", "dataset_version", "adapter_id", "method")
"""The columns naming one run: its rows are replaced together."""


def influence_uri(lance_dir: Path) -> str:
    return str(Path(lance_dir) / "influence.lance")


def write_influence(lance_dir: Path, table: pa.Table) -> str:
    """Replaces the rows of the runs present in ``table`` and appends ``table``."""
    uri = influence_uri(lance_dir)
    table = table.cast(INFLUENCE)
    if not Path(uri).exists():
        lance.write_dataset(table, uri, schema=INFLUENCE)
        return uri
    ds = _upgraded(uri)
    runs = set(zip(*(table[c].to_pylist() for c in RUN_KEY), strict=True))
    for d, v, a, m in sorted(runs):
        ds.delete(f"datanet_id = {int(d)} AND dataset_version = {int(v)} AND adapter_id = '{a}' AND method = '{m}'")
    lance.write_dataset(table, uri, mode="append")
    return uri


def _with_all_columns(table: pa.Table) -> pa.Table:
    """``table`` with every INFLUENCE column, those an older table lacks as nulls."""
    for name in INFLUENCE.names:
        if name not in table.column_names:
            table = table.append_column(INFLUENCE.field(name), pa.nulls(table.num_rows, INFLUENCE.field(name).type))
    return table.select(INFLUENCE.names).cast(INFLUENCE)


def _upgraded(uri: str) -> lance.LanceDataset:
    """The dataset at ``uri``, rewritten once with the current schema if it predates a column."""
    ds = lance.dataset(uri)
    if set(INFLUENCE.names) <= set(ds.schema.names):
        return ds
    return lance.write_dataset(_with_all_columns(ds.to_table()), uri, schema=INFLUENCE, mode="overwrite")


def read_influence(lance_dir: Path, filter: str | None = None) -> pa.Table:
    """The influence table (rows matching ``filter``, a Lance SQL predicate), older versions with null quality
    columns; an empty table when nothing was scored yet."""
    uri = influence_uri(lance_dir)
    if not Path(uri).exists():
        return INFLUENCE.empty_table()
    return _with_all_columns(lance.dataset(uri).to_table(filter=filter))


def record_canaries(lance_dir: Path, datanet_id: int, commitment: str, canary_ids: set[int],
                    auc_of: Callable[[pa.Table], float]) -> dict[tuple, float]:
    """Marks the revealed canaries in every run of the datanet scored under ``commitment`` and sets each
    run's ``canary_auc`` to ``auc_of(its rows)``; returns (datanet, dataset version, adapter, method) -> AUC."""
    rows = read_influence(lance_dir, f"datanet_id = {int(datanet_id)}")
    rows = rows.filter(pc.equal(rows["canary_commitment"], commitment))
    rows = rows.set_column(rows.schema.get_field_index("canary"), INFLUENCE.field("canary"),
                           pa.array([c in canary_ids for c in rows["contribution_id"].to_pylist()], pa.bool_()))
    keys = list(zip(*(rows[c].to_pylist() for c in RUN_KEY), strict=True))
    aucs, runs = {}, []
    for run in sorted(set(keys)):
        run_rows = rows.filter(pa.array([k == run for k in keys], pa.bool_()))
        aucs[run] = auc_of(run_rows)
        runs.append(run_rows.set_column(run_rows.schema.get_field_index("canary_auc"), INFLUENCE.field("canary_auc"),
                                        pa.array([aucs[run]] * run_rows.num_rows, pa.float64())))
    if runs:
        write_influence(lance_dir, pa.concat_tables(runs))
    return aucs


def harmful_contributions(table: pa.Table) -> pa.Table:
    """The rows the penalty stage acts on, with their evidence (the queries they hurt)."""
    return table.filter(table["harmful"])
