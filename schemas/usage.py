"""UsageEvent: one served request, as an event on the log, for the usage half of the loop to pay for.

Its id is a hash of the request id (``serving.usage.usage_id``), so a request retried with the same
``X-Request-Id``, or an event re-sent after a broker outage, is the same event (invariants 2 and 8).
It names everything a usage reward needs: which adapters answered (their datanets, dataset versions and
ensemble weights), on which base model, how many tokens, for whom (the caller's address, when the
request carried one), and, where retrieval was used, the retrieved sources.

Version 2 adds what context attribution needs to rescore a RAG answer after the fact, all nullable and
set only when sources were retrieved (a plain completion's text never reaches the log): ``messages``, the
caller's chat turns before the sources were added; ``answer``, the text the model generated (without the
citation markers serving appends); ``source_words``, parallel to ``retrieved_sources``, how many words of
each source's text the prompt showed (serving may cut the last source to fit the context). With these and
the chunk texts of the dataset version each source names, the prompt is rebuilt exactly. They are fields of
the event rather than a separate transcript record so that the answer and its sources can never be written
apart. v2 carries every v1 field unchanged, so a consumer of v1 fields reads both versions alike; v1 events
on the log stay valid and are simply not attributable.

Version 3 adds ``influences``: when the request asked for ``attribution``, the top-k training contributions
of the adapter that answered, by TracIn influence on the answer (``serving.influence``); null otherwise.
Consumers match usage events by name, so v1, v2 and v3 read alike through the fields they share.
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

_V1_FIELDS = [
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
]

CHAT_MESSAGE = pa.struct([pa.field("role", pa.string(), nullable=False),
                          pa.field("content", pa.string(), nullable=False)])

USAGE_EVENT_V1 = events.register("UsageEvent", 1, _V1_FIELDS, topics.USAGE)
_V2_FIELDS = [
    *_V1_FIELDS,
    pa.field("messages", pa.list_(CHAT_MESSAGE), nullable=True),
    pa.field("answer", pa.string(), nullable=True),
    pa.field("source_words", pa.list_(pa.int64()), nullable=True),
]
INFLUENCE = pa.struct([
    pa.field("rank", pa.int64(), nullable=False),  # 1 = most influential
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),  # TracIn influence on the answer's loss (serving.influence)
])

USAGE_EVENT_V2 = events.register("UsageEvent", 2, _V2_FIELDS, topics.USAGE)
USAGE_EVENT = events.register("UsageEvent", 3, [
    *_V2_FIELDS,
    pa.field("influences", pa.list_(INFLUENCE), nullable=True),  # asked for with ``attribution``; else null
], topics.USAGE)
"""The version serving writes."""
