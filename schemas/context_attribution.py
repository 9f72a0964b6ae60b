"""ContextAttributed: how much each retrieved source drove one RAG answer, as an event on the log.

Written by the context-attribution stage (``pipelines.context_attribution.stage``), read by the usage
rewards (``pipelines.context_attribution.weights.source_weights``), which split a RAG answer's source share
by these weights. Both event types live on ``payable.usage.attribution``, keyed by the usage event id, so
everything decided about one usage event stays in order on one partition.

- ``ContextAttributed`` v1: ``event_id`` is a hash of the usage event id and the method (invariant 2: a
  rerun writes the same id, and consumers count it once). ``sources`` lists every retrieved source in the
  usage event's order with its normalized weight: weights are >= 0 and sum to 1 per event (a source whose
  raw weight is negative, i.e. that made the answer less likely, gets 0; when every raw weight is <= 0 the
  weight is split equally among the sources). ``forward_passes`` is what the method spent.
- ``ContextAttributionSkipped`` v1: a RAG usage event the stage did not attribute, with a machine-readable
  ``reason`` (``pipelines.context_attribution.reasons``) and a human-readable ``detail``, so every RAG
  usage event ends attributed or skipped with a reason (invariant 5); a plain completion gets no record.
  Its id hashes the usage event id and the reason.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, topics

ATTRIBUTED_SOURCE = pa.struct([
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("chunk_id", pa.string(), nullable=False),  # "<contribution id>:<chunk index>" of the retrieval index
    pa.field("weight", pa.float64(), nullable=False),  # >= 0; an event's weights sum to 1
])

CONTEXT_ATTRIBUTED = events.register("ContextAttributed", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("usage_event_id", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),  # a key of pipelines.context_attribution.METHODS
    pa.field("forward_passes", pa.int64(), nullable=False),
    pa.field("sources", pa.list_(ATTRIBUTED_SOURCE), nullable=False),
], topics.USAGE_ATTRIBUTION)

CONTEXT_ATTRIBUTION_SKIPPED = events.register("ContextAttributionSkipped", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("usage_event_id", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
], topics.USAGE_ATTRIBUTION)
