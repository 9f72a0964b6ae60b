"""From raw context-attribution weights to the shares the usage rewards pay by, and back off the log.

``normalize`` is the one rule that turns a method's raw weights (log-probability units, any sign) into an
answer's source shares: negative weights count as 0 (a source that made the answer less likely drove none
of it), the rest are scaled to sum to 1, and when no source has a positive weight the answer is split
equally among its sources (its sources were retrieved and shown, and nothing singles one out). The stage
writes the normalized weights in ``ContextAttributed`` events; ``source_weights`` reads them back for the
usage rewards.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from payable.settings import Settings
from pipelines import log_views
from pipelines.context_attribution.methods import DEFAULT_METHOD
from schemas import topics
from schemas.context_attribution import CONTEXT_ATTRIBUTED


def normalize(raw: Sequence[float]) -> list[float]:
    """Per-source shares of one answer: ``max(w, 0) / sum(max(w, 0))``; equal shares when that sum is 0.

    A non-finite raw weight is a bug in the method, not a share: it raises ``ValueError``.
    """
    if any(not math.isfinite(w) for w in raw):
        raise ValueError(f"context-attribution weights must be finite, got {list(raw)}")
    clipped = [max(float(w), 0.0) for w in raw]
    total = sum(clipped)
    if total <= 0.0:
        return [1.0 / len(clipped)] * len(clipped) if clipped else []
    return [w / total for w in clipped]


def source_weights(settings: Settings, method: str = DEFAULT_METHOD) -> dict[str, dict[int, float]]:
    """usage event id -> contribution id -> weight, from the ``ContextAttributed`` events of ``method``.

    The chunks of one contribution are summed, so each usage event's weights still sum to 1. An event seen
    twice on the log (a rerun, a producer retry) counts once: events are keyed by their derived id, and
    that id is a hash of the usage event id and the method, so one usage event has one entry per method.
    """
    view = log_views.read_view(settings.kafka_bootstrap, topics.USAGE_ATTRIBUTION)
    by_event = {e["event_id"]: e for e in view.of(CONTEXT_ATTRIBUTED) if e["method"] == method}
    weights: dict[str, dict[int, float]] = {}
    for event in by_event.values():
        per_contribution: dict[int, float] = defaultdict(float)
        for source in event["sources"]:
            per_contribution[source["contribution_id"]] += source["weight"]
        weights[event["usage_event_id"]] = dict(per_contribution)
    return weights
