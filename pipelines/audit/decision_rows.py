"""Rows of the verdicts and dead_letters tables: the validate stage's decisions and what nobody could read.

Every verdict event is kept (a reorg can turn an accepted contribution into a rejected one); ``is_current``
marks each contribution's latest, which is its state. Undecodable records of any topic the audit reads,
and the dead-letter topics' entries, all land in ``dead_letters`` (invariant 5: nothing silently dropped).
"""

from __future__ import annotations

from pipelines.log_views import LogView
from schemas import events
from schemas.verdicts import CONTRIBUTION_VERDICT

RAW_CHARS = 2000  # enough of a raw record to recognise it; the log keeps the whole thing


def verdict_rows(verdicts: LogView) -> list[dict]:
    latest: dict[int, str] = {}
    rows: dict[str, dict] = {}
    for partition, offset, v in verdicts.positioned(CONTRIBUTION_VERDICT):
        latest[v["contribution_id"]] = v["verdict_id"]
        rows.setdefault(v["verdict_id"], {
            "verdict_id": v["verdict_id"], "contribution_id": v["contribution_id"], "datanet_id": v["datanet_id"],
            "contributor": v["contributor"].lower(), "status": v["status"], "reason": v["reason"],
            "duplicate_of": v["duplicate_of"], "similarity": v["similarity"], "penalize": v["penalize"],
            "detail": v["detail"], "event_id": v["fact_event_id"], "fact_block_hash": v["fact_block_hash"],
            "rules_version": v["rules_version"], "log_partition": partition, "log_offset": offset})
    current = set(latest.values())
    return [{**row, "is_current": vid in current} for vid, row in sorted(rows.items())]


def dead_letter_rows(views: dict[str, LogView]) -> list[dict]:
    """Dead-letter events of the DLQ topics plus undecodable records of every topic read, by topic."""
    rows = []
    for topic, view in sorted(views.items()):
        for partition, offset, d in view.positioned(events.DEAD_LETTER):
            rows.append({"topic": topic, "log_partition": partition, "log_offset": offset, "event_id": d["event_id"],
                         "source": d["source"], "origin": d["origin"], "error": d["error"],
                         "raw": d["raw"][:RAW_CHARS]})
        for (partition, offset, error), raw in zip(view.undecodable, view.undecodable_raw, strict=True):
            rows.append({"topic": topic, "log_partition": partition, "log_offset": offset, "event_id": None,
                         "source": "audit", "origin": None, "error": error,
                         "raw": raw.decode("utf-8", "replace")[:RAW_CHARS] if raw is not None else None})
    return rows
