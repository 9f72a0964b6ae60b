"""The commitments topic read back: each commitment's record and transaction states, in log order."""

from __future__ import annotations

from collections import defaultdict

from payable import kafka_log
from pipelines.rewards import outbox
from schemas import commitments as schema
from schemas import events, topics


def read_log(bootstrap: str) -> dict[str, list[outbox.Entry]]:
    """commitment id -> its events (records, tx states), in log order."""
    entries: dict[str, list[outbox.Entry]] = defaultdict(list)
    for message in kafka_log.read_topic(bootstrap, topics.COMMITMENTS):
        event_type, record = events.decode(message.value, message.headers)
        entries[record["commitment_id"]].append(outbox.Entry(message.offset, event_type.name, record))
    return dict(entries)


def recorded(entries: list[outbox.Entry]) -> dict | None:
    """The commitment's record (the first one: a commitment is recorded once)."""
    kinds = (schema.MODEL_COMMITMENT_RECORDED.name, schema.INFLUENCE_COMMITMENT_RECORDED.name)
    return next((e.record for e in entries if e.type in kinds), None)


def writer(bootstrap: str) -> outbox.OutboxWriter:
    return outbox.OutboxWriter(bootstrap, topic=topics.COMMITMENTS,
                               key=lambda r: topics.commitment_key(r["commitment_id"]))
