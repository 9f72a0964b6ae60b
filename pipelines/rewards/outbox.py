"""The rewards outbox on the log: an epoch's events read back in order, new ones appended durably.

Every event of epoch n is keyed ``epoch-<n>``, so Kafka's default partitioner (murmur2, the same in every
Kafka client) puts them all in one partition, in the order they were written; reading an epoch reads that
one partition. ``append`` returns only once the broker has acknowledged, which is what lets the emitter
say "the intent is on the log" before a transaction leaves the process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kafka.partitioner.default import murmur2

from payable import kafka_log
from schemas import events, topics
from schemas import rewards as schema

ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Entry:
    """One outbox event of an epoch, with its offset in the epoch's partition."""

    offset: int
    type: str
    record: dict


def derived_id(*parts: object) -> str:
    """A deterministic event id: the hash of what the event is about (invariant 2)."""
    return "0x" + hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def partition_of(epoch_id: int, partitions: int) -> int:
    return (murmur2(topics.epoch_key(epoch_id)) & 0x7FFFFFFF) % partitions


def read_epoch(bootstrap: str, epoch_id: int) -> list[Entry]:
    """Every outbox event of ``epoch_id``, in log order."""
    ends = kafka_log.end_offsets(bootstrap, topics.REWARDS_OUTBOX)
    if not ends:
        return []
    partition = partition_of(epoch_id, len(ends))
    key = topics.epoch_key(epoch_id)
    entries = []
    for message in kafka_log.read_range(bootstrap, topics.REWARDS_OUTBOX, partition, 0, ends[partition]):
        if message.key == key:
            event_type, record = events.decode(message.value, message.headers)
            entries.append(Entry(message.offset, event_type.name, record))
    return entries


def closed_epochs(bootstrap: str) -> dict[int, dict]:
    """epoch id -> its latest RewardEpochClosed record, over the whole outbox (a v1 marker reads as an epoch
    that paid no usage)."""
    return {record["epoch_id"]: {**schema.USAGE_BATCH_V1, **record}
            for record in _records_of(bootstrap, schema.REWARD_EPOCH_CLOSED)}


def window(entries: list[Entry], marker: Entry) -> list[Entry]:
    """The entries a RewardEpochClosed ``marker`` commits: from its ``first_offset`` up to the marker itself.

    Events of a close that died before its marker, or of an earlier close of the same epoch, lie outside."""
    return [e for e in entries if marker.record["first_offset"] <= e.offset < marker.offset]


def committed(bootstrap: str, event_types: tuple[events.EventType, ...]) -> dict[int, list[dict]]:
    """closed epoch id -> the records of ``event_types`` its latest marker commits, in log order (one scan)."""
    names = {t.name.encode() for t in event_types} | {schema.REWARD_EPOCH_CLOSED.name.encode()}
    by_epoch: dict[int, list[Entry]] = {}
    for partition, end in sorted(kafka_log.end_offsets(bootstrap, topics.REWARDS_OUTBOX).items()):
        for message in kafka_log.read_range(bootstrap, topics.REWARDS_OUTBOX, partition, 0, end):
            if dict(message.headers).get(topics.HEADER_EVENT_TYPE) in names:
                event_type, record = events.decode(message.value, message.headers)
                by_epoch.setdefault(record["epoch_id"], []).append(Entry(message.offset, event_type.name, record))
    out = {}
    for epoch_id, entries in by_epoch.items():
        marker = schema.REWARD_EPOCH_CLOSED.name
        markers = [e for e in entries if e.type == marker]
        if markers:
            out[epoch_id] = [e.record for e in window(entries, markers[-1]) if e.type != marker]
    return out


def epochs_on_chain(bootstrap: str, chain_id: int, distributor: str) -> set[int]:
    """Ids of the epochs the emitter finished on this chain's ``distributor`` (RewardEpochOnChain)."""
    return {record["epoch_id"] for record in _records_of(bootstrap, schema.REWARD_EPOCH_ON_CHAIN)
            if record["chain_id"] == chain_id and record["distributor"] == distributor.lower()}


def _records_of(bootstrap: str, event_type: events.EventType) -> list[dict]:
    """Every record of ``event_type`` on the outbox, partition by partition, in log order."""
    records = []
    for partition, end in sorted(kafka_log.end_offsets(bootstrap, topics.REWARDS_OUTBOX).items()):
        for message in kafka_log.read_range(bootstrap, topics.REWARDS_OUTBOX, partition, 0, end):
            if dict(message.headers).get(topics.HEADER_EVENT_TYPE) == event_type.name.encode():
                records.append(events.decode(message.value, message.headers)[1])
    return records


def end_offset(bootstrap: str, epoch_id: int) -> int:
    """The offset the next event of ``epoch_id`` will get (or a later one, if others write meanwhile)."""
    ends = kafka_log.end_offsets(bootstrap, topics.REWARDS_OUTBOX)
    return ends[partition_of(epoch_id, len(ends))]


class OutboxWriter:
    """Appends outbox events and waits for the broker's acknowledgement of each batch.

    By default the rewards outbox keyed by epoch; another outbox (the commitments') names its topic and key.
    """

    def __init__(self, bootstrap: str, topic: str = topics.REWARDS_OUTBOX,
                 key: Callable[[dict], bytes] = lambda r: topics.epoch_key(r["epoch_id"])):
        kafka_log.ensure_topics(bootstrap, [topic])
        self._producer = kafka_log.make_producer(bootstrap)
        self._topic, self._key = topic, key

    def append(self, event_type: events.EventType, records: Sequence[dict]) -> list[int]:
        """Writes ``records`` and returns their offsets once acknowledged."""
        futures = kafka_log.produce(self._producer, event_type, records, key=self._key, topic=self._topic)
        self._producer.flush(timeout=ACK_TIMEOUT_S)
        return [future.get(timeout=ACK_TIMEOUT_S).offset for future in futures]

    def close(self) -> None:
        self._producer.close(timeout=ACK_TIMEOUT_S)
