"""UsageEvent: one served request, as an event on the log, for the usage half of the loop to pay for.

Its id is a hash of the request id (``serving.usage.usage_id``), so a request retried with the same
``X-Request-Id``, or an event re-sent after a broker outage, is the same event (invariants 2 and 8).
It names everything a usage reward needs: which adapters answered (their datanets, dataset versions and
ensemble weights), on which base model, how many tokens, for whom (the caller's address, when the
request carried one), and, where retrieval was used, the retrieved sources (empty until the RAG issue).
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, topics

RETRIEVED_SOURCE = pa.struct([
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("chunk_id", pa.string(), nullable=False),  # "<contribution id>:<chunk index>" of the retrieval index
    pa.field("dataset_version", pa.int64(), nullable=False),  # the version the retrieval index covered
    pa.field("score", pa.float64(), nullable=False),  # fused retrieval score
])

USAGE_EVENT = events.register("UsageEvent", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),  # the name the caller asked for (adapter id, alias, ensemble)
    pa.field("adapter_ids", pa.list_(pa.string()), nullable=False),  # empty: the base model alone
    pa.field("datanet_ids", pa.list_(pa.int64()), nullable=False),  # parallel to adapter_ids
    pa.field("dataset_versions", pa.list_(pa.int64()), nullable=False),
    pa.field("adapter_weights", pa.list_(pa.float64()), nullable=False),  # ensemble weights; [1.0] for one
    pa.field("base_model_hash", pa.string(), nullable=False),
    pa.field("prompt_tokens", pa.int64(), nullable=False),
    pa.field("completion_tokens", pa.int64(), nullable=False),
    pa.field("latency_ms", pa.float64(), nullable=False),
    pa.field("caller", pa.string(), nullable=True),  # 0x-prefixed lower-case address from X-Payable-Caller
    pa.field("finish_reason", pa.string(), nullable=False),  # stop | length | cancelled | error
    pa.field("retrieved_sources", pa.list_(RETRIEVED_SOURCE), nullable=False),
    pa.field("served_at_ms", pa.int64(), nullable=False),
], topics.USAGE)
