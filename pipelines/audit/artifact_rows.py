"""Rows of the artifact tables: dataset versions and their contents (Lance), training runs (the adapter
registry's lineage), influence scores (the attribution stage's Lance table).

These read the stages' stored projections as they are; each row names the keys that lead back to the log
(``verdict_id``, ``event_id``) and forward to payouts (``datanet_id`` + ``dataset_version``, ``adapter_id``).
"""

from __future__ import annotations

import json
from pathlib import Path

import lance
import pyarrow as pa

from payable.settings import Settings
from pipelines.attribution.table import influence_uri, read_influence
from pipelines.training.registry import AdapterRecord
from pipelines.validate import materialize


def dataset_rows(lance_dir: Path) -> tuple[list[dict], list[dict]]:
    """(dataset_versions rows, dataset_contributions rows) of every datanet's Lance dataset, every version."""
    versions, members = [], []
    for datanet_id in materialize.datanet_ids(lance_dir):
        uri = materialize.dataset_uri(lance_dir, datanet_id)
        dataset = lance.dataset(uri)
        for info in dataset.versions():
            number = info["version"]
            props = dict(getattr(dataset.read_transaction(number), "transaction_properties", None) or {})
            content = lance.dataset(uri, version=number).to_table(
                columns=["contribution_id", "verdict_id", "fact_event_id"])
            versions.append({"datanet_id": datanet_id, "dataset_version": number, "run_id": props.get("run_id"),
                             "offsets": props.get("offsets"), "verdict_digest": props.get("verdict_digest"),
                             "num_rows": content.num_rows, "committed_at": info["timestamp"]})
            members += [{"datanet_id": datanet_id, "dataset_version": number, "contribution_id": c,
                         "verdict_id": v, "event_id": e}
                        for c, v, e in zip(*content.to_pydict().values(), strict=True)]
    return versions, members


def training_rows(adapters_dir: Path) -> list[dict]:
    """One row per adapter in the registry (``<adapters_dir>/dn-<id>/<adapter_id>/lineage.json``)."""
    rows = []
    for lineage in sorted(Path(adapters_dir).glob("dn-*/*/lineage.json")):
        r = AdapterRecord.from_json(lineage.read_text())
        rows.append({"adapter_id": r.adapter_id, "datanet_id": r.datanet_id, "dataset_version": r.dataset_version,
                     "dataset_fingerprint": r.dataset_fingerprint, "base_model": r.base_model.get("name", ""),
                     "base_model_hash": r.base_model.get("hash", ""),
                     "training_arguments": json.dumps(r.training_arguments, sort_keys=True),
                     "eval_source": r.eval_source, "num_train_examples": r.num_train_examples,
                     "num_eval_queries": r.num_eval_queries, "metrics": json.dumps(r.metrics, sort_keys=True),
                     "final_loss": r.loss_curve[-1] if r.loss_curve else None, "access_grant": r.access_grant})
    return rows


def influence_table(settings: Settings) -> pa.Table | None:
    """The whole influence table (every dataset version, adapter and method), or None before attribution."""
    if not Path(influence_uri(settings.lance_dir)).exists():
        return None
    table = read_influence(settings.lance_dir)  # a table from before the quality columns: they read as NULL
    return table.sort_by([("contribution_id", "ascending"), ("adapter_id", "ascending"), ("method", "ascending")])
