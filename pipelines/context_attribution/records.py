"""The stage's decisions as log records: a ``ContextAttributed`` or a ``ContextAttributionSkipped`` event.

Ids are derived from their inputs (invariant 2): an attribution's from the usage event id and the method,
a skip's from the usage event id and the reason, so rerunning the stage over the same usage events writes
the same ids and every consumer counts them once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pipelines.context_attribution.weights import normalize


def _derived_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def attributed(usage_event: dict, method: str, raw_weights: Sequence[float], forward_passes: int) -> dict:
    """The ContextAttributed record of ``usage_event``: its retrieved sources, in order, with normalized
    weights (``weights.normalize``) of the method's ``raw_weights`` (one per retrieved source)."""
    sources = usage_event["retrieved_sources"]
    if len(raw_weights) != len(sources):
        raise ValueError(f"{len(raw_weights)} weights for {len(sources)} sources of {usage_event['event_id']}")
    return {
        "event_id": _derived_id("ctx-", "context-attribution", usage_event["event_id"], method),
        "usage_event_id": usage_event["event_id"], "method": method, "forward_passes": int(forward_passes),
        "sources": [{"contribution_id": s["contribution_id"], "chunk_id": s["chunk_id"], "weight": w}
                    for s, w in zip(sources, normalize(raw_weights), strict=True)],
    }


def skipped(usage_event_id: str, reason: str, detail: str) -> dict:
    """The ContextAttributionSkipped record: ``reason`` is one of ``reasons.REASONS``."""
    return {"event_id": _derived_id("ctx-skip-", "context-attribution-skipped", usage_event_id, reason),
            "usage_event_id": usage_event_id, "reason": reason, "detail": detail}
