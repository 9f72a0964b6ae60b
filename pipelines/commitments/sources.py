"""Reading what is committed from the stages that produce it, through their public functions.

Adapters come from the training stage's registry (``<data_dir>/adapters``, lineage.json per adapter), their
dataset versions from the datanet's Lance dataset, influence runs from the attribution stage's table
(``<lance_dir>/influence.lance``). Nothing here writes: these are the projections a commitment is taken of,
and the ones ``verify`` rebuilds the trees from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from payable.settings import Settings
from pipelines.attribution.table import read_influence
from pipelines.commitments import trees
from pipelines.commitments.records import InfluenceCommitment, ModelCommitment, canonical_hash, fixed_point, hexed
from pipelines.rewards.runs import run_names
from pipelines.training.data import fingerprint_queries, read_version, split_train_eval
from pipelines.training.registry import AdapterRecord, AdapterRegistry
from pipelines.validate import materialize

RUN_COLUMNS = ["contribution_id", "contributor", "datanet_id", "dataset_version", "adapter_id", "method", "score",
               "rank", "harmful", "lds", "canary_commitment", "canary", "canary_auc"]
DEFAULT_HOLDOUT_MOD = 10


def adapters(settings: Settings, datanet_ids: list[int] | None = None) -> list[AdapterRecord]:
    """Every registered adapter of the datanets (default: every materialized datanet), oldest first."""
    registry = AdapterRegistry(settings.adapters_dir)
    ids = datanet_ids if datanet_ids is not None else materialize.datanet_ids(settings.lance_dir)
    return [record for datanet_id in ids for record in registry.records(datanet_id)]


def dataset_rows(record: AdapterRecord) -> pa.Table:
    """The adapter's dataset version: its rows, sorted by contribution id."""
    return read_version(record.dataset_uri, record.dataset_version).table


def model_commitment(settings: Settings, record: AdapterRecord) -> ModelCommitment:
    rows = dataset_rows(record)
    tree = trees.dataset_tree(rows["contribution_id"].to_pylist(), rows["content_hash"].to_pylist())
    holdout_mod = record.training_arguments.get("eval_holdout_mod", DEFAULT_HOLDOUT_MOD)
    _, queries = split_train_eval(rows, settings.lance_dir, record.datanet_id, holdout_mod)
    folder = AdapterRegistry(settings.adapters_dir).folder(record.datanet_id, record.adapter_id)
    return ModelCommitment(
        adapter_id=record.adapter_id, datanet_id=record.datanet_id, dataset_version=record.dataset_version,
        dataset_root=hexed(tree.root), base_model_hash="0x" + record.base_model["hash"].removeprefix("0x"),
        weights_hash=weights_hash(folder), eval_set_hash="0x" + fingerprint_queries(queries),
        training_args_hash=hexed(canonical_hash(record.training_arguments)), contributions=rows.num_rows)


def weights_hash(folder: Path) -> str:
    """sha256 over the adapter folder's top-level ``.safetensors`` files (name, then bytes, in name order)."""
    h = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no adapter weights in {folder}")
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return "0x" + h.hexdigest()


def influence_table(settings: Settings) -> pa.Table:
    return read_influence(settings.lance_dir).select(RUN_COLUMNS)


def run_rows(table: pa.Table, run: str) -> pa.Table:
    """One run's rows of the influence table, sorted by contribution id."""
    datanet, version, adapter, method = run.split(":")
    same_version = pc.and_(pc.equal(table["datanet_id"], int(datanet)),
                           pc.equal(table["dataset_version"], int(version)))
    same_model = pc.and_(pc.equal(table["adapter_id"], adapter), pc.equal(table["method"], method))
    mask = pc.and_(same_version, same_model)
    return table.filter(mask).sort_by("contribution_id")


def runs_of(table: pa.Table, adapter_ids: set[str]) -> list[str]:
    """The names of the runs scored on the given adapters ("<datanet>:<version>:<adapter>:<method>", as the
    reward epochs name the runs they pay)."""
    return sorted({run for run in run_names(table) if run.split(":")[2] in adapter_ids})


def awaits_canary_reveal(rows: pa.Table) -> bool:
    """The run was scored under a canary commitment not revealed yet: committing it now would fix its AUC at
    "unmeasured" forever (a commitment is published once), so it waits for the reveal."""
    return rows.num_rows > 0 and rows["canary_commitment"][0].is_valid and not rows["canary"][0].is_valid


def influence_commitment(rows: pa.Table, run: str) -> InfluenceCommitment:
    """The commitment of one run's rows (``run_rows``), with its quality figures as the rows hold them: LDS and
    canary AUC in fixed point, 0 while unmeasured (no LDS subsets; no canaries, or not yet revealed)."""
    if rows.num_rows == 0:
        raise LookupError(f"influence run {run} has no rows")
    tree = trees.scores_tree(rows["contribution_id"].to_pylist(), rows["score"].to_pylist())
    _, _, adapter, method = run.split(":")
    lds, auc = (rows[name][0].as_py() for name in ("lds", "canary_auc"))
    return InfluenceCommitment(run, adapter, method, hexed(tree.root), rows.num_rows,
                               lds=0 if lds is None else fixed_point(lds), auc=0 if auc is None else fixed_point(auc))
