"""Chain facts read back from Kafka, decoded and sorted into what the validate stage needs.

Each fact keeps its log position (``_partition``, ``_offset``): facts of one datanet share a partition
(they are keyed by datanet), so offset order is chain order, which decides who was first. A message
that does not decode becomes a DeadLetter record instead of being dropped (invariant 5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from payable.kafka_log import Message
from schemas import events

SUBMITTED = events.CONTRIBUTION_SUBMITTED.name
CREATED = events.DATANET_CREATED.name
RETRACTED = events.FACT_RETRACTED.name
ORIGIN = "validate"


@dataclass
class FactChunk:
    """The decoded facts of one offset range, by kind; everything else the stage ignores."""

    submissions: list[dict] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)
    retractions: list[dict] = field(default_factory=list)
    dead_letters: list[tuple[bytes, dict]] = field(default_factory=list)  # (message key, DeadLetter record)


def fact_key(event_id: str, block_hash: str) -> str:
    """A fact's identity: the same log entry seen twice (a replay) has the same key."""
    return f"{event_id}@{block_hash}"


def dead_letter(message: Message, error: str) -> dict:
    """A DeadLetter record for an undecodable message; its id is a hash of the message's coordinates."""
    source = f"{message.topic}[{message.partition}]@{message.offset}"
    digest = hashlib.sha256(source.encode() + b"\0" + (message.value or b"")).hexdigest()
    raw = (message.value or b"").decode("utf-8", "backslashreplace")
    return {"event_id": f"dlq:{digest}", "source": source, "error": error, "raw": raw, "origin": ORIGIN}


def decode_messages(messages: Iterable[Message]) -> FactChunk:
    """Decodes and validates each message; sorts facts by kind, undecodable ones into dead letters."""
    chunk = FactChunk()
    for message in messages:
        try:
            event_type, record = events.decode(message.value, message.headers)
        except events.SchemaError as exc:
            chunk.dead_letters.append((message.key or b"", dead_letter(message, str(exc))))
            continue
        record = {**record, "_partition": message.partition, "_offset": message.offset}
        if event_type.name == SUBMITTED:
            chunk.submissions.append(record)
        elif event_type.name == CREATED:
            chunk.created.append(record)
        elif event_type.name == RETRACTED and record["retracted_event_type"] == SUBMITTED:
            chunk.retractions.append(record)
    return chunk
