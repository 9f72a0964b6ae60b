"""A contribution as the chat page shows it behind a citation: its text, contributor, datanet and verdict.

Read from the projections, never from the chain or the log at request time: the datanets' Lance datasets
hold every accepted contribution (text, contributor, the verdict that admitted it), version by version,
and the audit database, where it has been built, holds each contribution's current verdict with its
reason. A contribution that an older dataset version held and the newest does not was removed after its
acceptance (a later verdict, or a reorg that retracted its submission): the page says so rather than
showing it as live.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import lance

from payable.settings import Settings
from pipelines.validate.materialize import datanet_ids, dataset_uri, open_dataset

_COLUMNS = ["contribution_id", "datanet_id", "contributor", "content_hash", "text", "block_number", "verdict_id"]


def _rows_in(dataset: lance.LanceDataset, contribution_id: int) -> list[dict]:
    return dataset.to_table(columns=_COLUMNS, filter=f"contribution_id = {int(contribution_id)}").to_pylist()


def _from_datasets(lance_dir: Path, contribution_id: int) -> dict | None:
    """The row of the newest dataset version holding the contribution, with that version and whether it is
    still in its datanet's newest version; None when no version of any datanet ever held it."""
    for datanet_id in datanet_ids(lance_dir):
        dataset = open_dataset(dataset_uri(lance_dir, datanet_id))
        if dataset is None:
            continue
        rows = _rows_in(dataset, contribution_id)
        if rows:
            return {**rows[0], "dataset_version": dataset.version, "in_latest_version": True}
        for version in sorted((v["version"] for v in dataset.versions()), reverse=True)[1:]:
            rows = _rows_in(dataset.checkout_version(version), contribution_id)
            if rows:
                return {**rows[0], "dataset_version": version, "in_latest_version": False,
                        "latest_dataset_version": dataset.version}
    return None


def _audit_verdict(audit_db: Path, contribution_id: int) -> dict | None:
    """The current verdict in the audit database, or None where the database or the verdict is missing (a
    database being rebuilt, or locked by its writer, is the same as none: the dataset still answers)."""
    if not audit_db.exists():
        return None
    try:
        with duckdb.connect(str(audit_db), read_only=True) as con:
            found = con.execute(
                "SELECT verdict_id, status, reason, detail, rules_version FROM verdicts "
                "WHERE contribution_id = ? AND is_current", [contribution_id]).fetchone()
    except duckdb.Error:
        return None
    if found is None:
        return None
    return dict(zip(("verdict_id", "status", "reason", "detail", "rules_version"), found, strict=True)) | {
        "source": "audit"}


def contribution_detail(settings: Settings, contribution_id: int) -> dict | None:
    """What the page shows for one contribution id, or None when no dataset ever held it."""
    row = _from_datasets(settings.lance_dir, contribution_id)
    if row is None:
        return None
    verdict = _audit_verdict(settings.audit_db, contribution_id) or {
        "verdict_id": row["verdict_id"], "status": "accepted" if row["in_latest_version"] else "removed",
        "reason": None if row["in_latest_version"] else
        f"not in dataset version {row['latest_dataset_version']} (removed after its acceptance)",
        "detail": None, "rules_version": None, "source": "dataset"}
    return {key: row[key] for key in ("contribution_id", "datanet_id", "contributor", "content_hash", "text",
                                      "block_number", "dataset_version", "in_latest_version")} | {"verdict": verdict}
