"""Builds the DuckDB audit database: a projection of the log and the stages' stored tables.

Built into a temporary file beside the target and renamed over it in one step, so a reader sees the
previous complete database or the new complete one, never a half-built one; deleting the file and
building again gives the same contents (invariant 1). No key or signed transaction is ever written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from payable.settings import Settings
from pipelines.audit import artifact_rows, decision_rows, fact_rows, tables
from pipelines.audit.epoch_rows import epoch_rows
from pipelines.log_views import LogView, read_view
from schemas import rewards as _reward_events  # noqa: F401 - registers the outbox events for decoding
from schemas import topics


@dataclass(frozen=True)
class AuditSummary:
    """What a build wrote: the file, rows per table, and the epochs whose allocations could not be found."""

    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    epochs_without_allocations: tuple[int, ...] = ()
    undecodable: int = 0


def build_audit_db(settings: Settings, path: Path | None = None) -> AuditSummary:
    """(Re)builds the audit database at ``path`` (default ``settings.audit_db``) from the log and Lance."""
    target = Path(path or settings.audit_db)
    target.parent.mkdir(parents=True, exist_ok=True)
    views = {topic: read_view(settings.kafka_bootstrap, topic)
             for topic in (topics.CHAIN_FACTS, topics.VERDICTS, topics.REWARDS_OUTBOX, topics.CHAIN_DLQ,
                           topics.VERDICTS_DLQ)}
    content = _table_contents(settings, views)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    building.unlink(missing_ok=True)
    con = duckdb.connect(str(building))
    try:
        for statement in tables.create_statements():
            con.execute(statement)
        for name, rows in content.items():
            _insert(con, name, rows)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(building, target)
    rows = {name: len(r) if isinstance(r, list) else r.num_rows for name, r in content.items()}
    missing = tuple(e["epoch_id"] for e in content["reward_epochs"] if e["allocation_source"] == "unavailable")
    return AuditSummary(target, rows, missing, sum(len(v.undecodable) for v in views.values()))


def _table_contents(settings: Settings, views: dict[str, LogView]) -> dict[str, list[dict] | pa.Table]:
    facts = views[topics.CHAIN_FACTS]
    contributions = fact_rows.contribution_rows(facts)
    versions, members = artifact_rows.dataset_rows(settings.lance_dir)
    influence = artifact_rows.influence_table(settings)
    rewards = epoch_rows(settings, views[topics.REWARDS_OUTBOX], facts, influence,
                         {c["contribution_id"]: c["event_id"] for c in contributions})
    return {
        "chain_events": fact_rows.chain_event_rows(facts),
        "datanets": fact_rows.datanet_rows(facts),
        "contributions": contributions,
        "verdicts": decision_rows.verdict_rows(views[topics.VERDICTS]),
        "dead_letters": decision_rows.dead_letter_rows(views),
        "dataset_versions": versions,
        "dataset_contributions": members,
        "training_runs": artifact_rows.training_rows(settings.adapters_dir),
        "influence_scores": influence if influence is not None else [],
        "reward_epochs": rewards.reward_epochs,
        "account_payouts": rewards.account_payouts,
        "payouts": rewards.payouts,
        "slash_requests": rewards.slash_requests,
        "reward_tx_states": rewards.reward_tx_states,
    }


def _insert(con: duckdb.DuckDBPyConnection, name: str, rows: list[dict] | pa.Table) -> None:
    """Inserts by column name; DuckDB casts decimal strings to DECIMAL(38,0) exactly (and fails loudly)."""
    source = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows) if rows else None
    if source is None or source.num_rows == 0:
        return
    con.register("audit_source", source)
    try:
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM audit_source")
    finally:
        con.unregister("audit_source")
