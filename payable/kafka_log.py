"""The Kafka log at payable's edges: topic set-up, validated produce, bounded reads of offset ranges.

Works against any Kafka-protocol bootstrap address (invariant 7); nothing here knows which broker
implementation answers. Reads are bounded (start/end offsets), never open-ended loops, because the
stages process explicit offset ranges and an idle consumer must not spin.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from payable.errors import PayableError
from schemas import events, topics

DEFAULT_PARTITIONS = 4


@dataclass(frozen=True)
class Message:
    """One record read back from the log, with its coordinates."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def log_error(exc: BaseException, bootstrap: str) -> PayableError | None:
    """The one-line error for a Kafka failure that reached the user (after the client's own retries)."""
    if not isinstance(exc, KafkaError):
        return None
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    return PayableError(f"the Kafka log at {bootstrap} failed: {detail}; start the local broker with `payable up`, "
                        "or set KAFKA_BOOTSTRAP to a running cluster")


def ensure_topics(bootstrap: str, names: Sequence[str] = topics.ALL_TOPICS,
                  partitions: int = DEFAULT_PARTITIONS) -> None:
    """Creates the missing ones of ``names``; existing topics are left as they are."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if missing:
            # Created concurrently by another process is the wanted end state too.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


def make_producer(bootstrap: str, **overrides) -> KafkaProducer:
    """An idempotent, all-acks producer: retries never duplicate or reorder within a partition."""
    config = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "retries": 10,
        "max_in_flight_requests_per_connection": 5,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def produce(producer: KafkaProducer, event_type: events.EventType, records: Sequence[dict],
            key: Callable[[dict], bytes], topic: str | None = None) -> list:
    """Validates ``records`` as ``event_type`` and sends them; returns the send futures."""
    values = events.encode(event_type, records)
    destination = topic or event_type.topic
    headers = event_type.headers
    return [producer.send(destination, value=value, key=key(record), headers=headers)
            for record, value in zip(records, values, strict=True)]


def _consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        consumer_timeout_ms=1000,
        fetch_max_wait_ms=100,
    )


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> next offset to be written (the high watermark), for every partition of ``topic``."""
    consumer = _consumer(bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int,
               timeout_s: float = 30.0) -> Iterator[Message]:
    """Yields the records of ``topic``/``partition`` with start <= offset < end, then stops.

    Offsets inside the range may be absent (transaction markers, aborted records); the read still ends
    once the consumer's position reaches ``end``. Raises TimeoutError if the range cannot be read.
    """
    if start >= end:
        return
    consumer = _consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] {start}..{end} stalled at {consumer.position(tp)}")
            for record in consumer.poll(timeout_ms=200, max_records=5000).get(tp, []):
                if record.offset >= end:
                    return
                yield Message(topic, partition, record.offset, record.key, record.value, list(record.headers))
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str) -> Iterator[Message]:
    """Every record of ``topic`` up to its current end, partition by partition, in offset order."""
    for partition, end in sorted(end_offsets(bootstrap, topic).items()):
        yield from read_range(bootstrap, topic, partition, 0, end)
