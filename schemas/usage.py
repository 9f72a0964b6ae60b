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

Version 4 adds ``agent`` and ``signature``: the serving agent (the address a ``payable serve`` instance staked
OPEN under in the AgentRegistry) and its EIP-191 signature over ``usage_digest`` of the event, which covers every
field but the signature itself (so the ids, adapters, datanets, versions, token counts, sources, caller, base
model and transcript that money depends on cannot be changed after the agent reported them). Both are null in an
event written without an agent key, and absent from v1-v3 events: the usage rule pays neither (nobody vouches for
them; ``pipelines.rewards.usage``).
"""

from __future__ import annotations

import json

import pyarrow as pa
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

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
_V3_FIELDS = [
    *_V2_FIELDS,
    pa.field("influences", pa.list_(INFLUENCE), nullable=True),  # asked for with ``attribution``; else null
]
USAGE_EVENT_V3 = events.register("UsageEvent", 3, _V3_FIELDS, topics.USAGE)
USAGE_EVENT = events.register("UsageEvent", 4, [
    *_V3_FIELDS,
    pa.field("agent", pa.string(), nullable=True),      # 0x-prefixed lower-case address of the serving agent
    pa.field("signature", pa.string(), nullable=True),  # 0x-prefixed 65 bytes: the agent's EIP-191 signature
], topics.USAGE)
"""The version serving writes."""

SIGNED_FIELDS = tuple(f.name for f in USAGE_EVENT.schema if f.name != "signature")
"""What an agent's signature covers: every v4 field but the signature (fixed here, so a later version's new
fields do not change what a v4 signature means)."""


def usage_digest(event: dict) -> bytes:
    """keccak256 of the canonical JSON (sorted keys, no spaces) of the event's ``SIGNED_FIELDS``: what the agent
    signs. Values are as the log holds them, so a digest computed from a record read back equals the signer's."""
    signed = {name: event.get(name) for name in SIGNED_FIELDS}
    return keccak(json.dumps(signed, sort_keys=True, separators=(",", ":")).encode())


def usage_signer(event: dict) -> str | None:
    """The lower-case address whose EIP-191 signature of ``usage_digest(event)`` the event carries, or None when
    the signature does not parse (a well-formed signature by the wrong key recovers a different address)."""
    try:
        signer = Account.recover_message(encode_defunct(primitive=usage_digest(event)), signature=event["signature"])
    except (ValueError, TypeError, KeyError):
        return None
    return signer.lower()
