"""Builds the DuckDB audit database: a projection of the log and the stages' stored tables.

Built into a temporary file beside the target and renamed over it in one step, so a reader sees the
previous complete database or the new complete one, never a half-built one; deleting the file and
building again gives the same contents (invariant 1). No key or signed transaction is ever written.

Each database records what it was built from (table ``built_from``: the end offset of every log
partition read, and a fingerprint of the stored tables' versions), so that ``stale_reason`` can tell a
reader that the log or the stored tables have moved on since, instead of answering from old rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from payable import kafka_log
from payable.settings import Settings
from pipelines.audit import artifact_rows, decision_rows, fact_rows, tables
from pipelines.audit.epoch_rows import epoch_rows
from pipelines.audit.usage_rows import usage_tables
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
    marks = built_from(settings)  # before reading: a record written meanwhile makes the next check rebuild
    views = {topic: read_view(settings.kafka_bootstrap, topic) for topic in SOURCE_TOPICS}
    content = _table_contents(settings, views)
    building = target.with_name(f"{target.name}.building-{os.getpid()}")
    building.unlink(missing_ok=True)
    con = duckdb.connect(str(building))
    try:
        for statement in tables.create_statements():
            con.execute(statement)
        for name, rows in content.items():
            _insert(con, name, rows)
        con.execute(f"CREATE TABLE {MARKS_TABLE} (source VARCHAR PRIMARY KEY, position VARCHAR NOT NULL)")
        con.executemany(f"INSERT INTO {MARKS_TABLE} VALUES (?, ?)", sorted(marks.items()))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(building, target)
    rows = {name: len(r) if isinstance(r, list) else r.num_rows for name, r in content.items()}
    missing = tuple(e["epoch_id"] for e in content["reward_epochs"] if e["allocation_source"] == "unavailable")
    return AuditSummary(target, rows, missing, sum(len(v.undecodable) for v in views.values()))


SOURCE_TOPICS = (topics.CHAIN_FACTS, topics.VERDICTS, topics.REWARDS_OUTBOX, topics.CHAIN_DLQ, topics.VERDICTS_DLQ,
                 topics.USAGE, topics.USAGE_ATTRIBUTION)
MARKS_TABLE = "built_from"
_STORED = "stored tables"


def built_from(settings: Settings) -> dict[str, str]:
    """Where the sources of the database stand now: ``topic[partition]`` -> end offset, plus the stored tables.

    The stored tables' mark hashes the names of every Lance version manifest and adapter lineage file:
    a new dataset version, influence table version or adapter changes it; reading them is not needed.
    """
    marks = {f"{topic}[{partition}]": str(end) for topic in SOURCE_TOPICS
             for partition, end in kafka_log.end_offsets(settings.kafka_bootstrap, topic).items()}
    stored = sorted(str(p.relative_to(settings.data_dir)) for p in [
        *Path(settings.lance_dir).glob("**/_versions/*.manifest"),
        *Path(settings.adapters_dir).glob("dn-*/*/lineage.json")])
    marks[_STORED] = hashlib.sha256("\n".join(stored).encode()).hexdigest()
    return marks


def stale_reason(settings: Settings, path: Path) -> str | None:
    """Why the database at ``path`` no longer answers for the current log and stored tables, or None."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return f"it cannot be opened ({' '.join(str(exc).split())})"
    try:
        recorded = dict(con.execute(f"SELECT source, position FROM {MARKS_TABLE}").fetchall())
    except duckdb.CatalogException:
        return "it records no build marks (built by an older payable)"
    finally:
        con.close()
    now = built_from(settings)
    moved = sorted(source for source in now.keys() | recorded.keys()
                   if source != _STORED and now.get(source, "0") != recorded.get(source, "0"))
    if moved:
        return f"the log moved past it ({', '.join(moved[:3])}{', ...' if len(moved) > 3 else ''})"
    if now[_STORED] != recorded.get(_STORED):
        return "the stored tables (Lance datasets, influence scores, adapters) changed since it was built"
    return None


def _table_contents(settings: Settings, views: dict[str, LogView]) -> dict[str, list[dict] | pa.Table]:
    facts = views[topics.CHAIN_FACTS]
    contributions = fact_rows.contribution_rows(facts)
    versions, members = artifact_rows.dataset_rows(settings.lance_dir)
    influence = artifact_rows.influence_table(settings)
    rewards = epoch_rows(views[topics.REWARDS_OUTBOX], facts, influence,
                         {c["contribution_id"]: c["event_id"] for c in contributions})
    usage_events, citations = usage_tables(views[topics.USAGE], views[topics.USAGE_ATTRIBUTION])
    return {
        "chain_events": fact_rows.chain_event_rows(facts),
        "datanets": fact_rows.datanet_rows(facts),
        "access_grants": fact_rows.access_grant_rows(facts),
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
        "usage_payouts": rewards.usage_payouts,
        "slash_requests": rewards.slash_requests,
        "reward_tx_states": rewards.reward_tx_states,
        "usage_events": usage_events,
        "citations": citations,
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
