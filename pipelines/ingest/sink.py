"""Writes one chunk of the ingester's output to Kafka as one transaction: all of it, or none of it.

A chunk's facts, dead letters, alerts and the checkpoint that covers them commit together, so a consumer
reading with isolation_level=read_committed sees a chunk whole or not at all, and a restarted ingester
resumes from the last committed checkpoint: no fact is lost. A broker stopped mid-transaction was once seen
(in CI, under load) to leave an extra identical copy of a retried transaction's fact for read_committed
readers; consumers are idempotent by (event id, block hash) (invariant 2), so a copy is a replay. The producer's
transactional id is stable per chain and deployment; a restarted ingester re-registers it, which fences a
zombie predecessor and aborts its open transaction.

This producer is confluent-kafka (librdkafka), not kafka-python like ``payable.kafka_log``: measured here,
kafka-python spends 40-50 µs of Python per record in ``send`` plus its sender thread's work under the same
GIL (and without the ``crc32c`` package it computes CRC-32C in pure Python, about 1 µs per byte);
librdkafka takes about 15 µs per record from ``produce`` to committed transaction. Partitions
use the murmur2 partitioner, the Java client's and kafka-python's default, so a datanet's key lands in the
same partition whichever client wrote it. Records are validated against their schema before they get here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer

from schemas import events


class SinkError(RuntimeError):
    """Kafka did not take a chunk; nothing of it is visible to read_committed consumers."""


# (event type name, key, JSON value) as produced by ``events.encode``.
Message = tuple[str, bytes, bytes]


class TransactionalSink:
    """One transactional producer; ``commit`` writes a chunk atomically."""

    def __init__(self, bootstrap: str, transactional_id: str, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "message.timeout.ms": int(timeout_s * 1000),
            "transaction.timeout.ms": int(max(60.0, 2 * timeout_s) * 1000),
            "logger": logging.getLogger("pipelines.ingest.librdkafka"),  # not raw lines on stderr
        })
        self._delivered: dict[tuple[str, int], int] = {}
        self._routes = {t.name: (t.topic, t.headers) for t in events.registered()}
        try:
            self._producer.init_transactions(timeout_s)
        except KafkaException as exc:
            raise SinkError(f"init_transactions: {exc}") from exc

    def commit(self, messages: Sequence[Message]) -> dict[tuple[str, int], int]:
        """Produces ``messages`` in order as one transaction; returns (topic, partition) -> next offset.

        Only the partitions written to appear in the result; each offset is one past this chunk's last
        record there, read from the delivery reports of the last record of each key.
        """
        last_of_key = {(name, key): i for i, (name, key, _) in enumerate(messages)}
        self._delivered = {}
        try:
            self._producer.begin_transaction()
            for i, (name, key, value) in enumerate(messages):
                topic, headers = self._routes[name]
                report = self._on_delivery if last_of_key.get((name, key)) == i else None
                self._produce(topic, key, value, headers, report)
            self._producer.commit_transaction(self.timeout_s)
        except (KafkaException, BufferError) as exc:
            self._abort()
            raise SinkError(f"transaction of {len(messages)} records failed: {exc}") from exc
        return dict(self._delivered)

    def _produce(self, topic: str, key: bytes, value: bytes, headers: list, report: object) -> None:
        deadline = time.monotonic() + self.timeout_s
        extra = {} if report is None else {"on_delivery": report}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, **extra)
                return
            except BufferError:  # the local queue is full: let librdkafka deliver some first
                if time.monotonic() > deadline:
                    raise
                self._producer.poll(0.05)

    def _on_delivery(self, error: object, message: object) -> None:
        if error is None:
            where = (message.topic(), message.partition())
            self._delivered[where] = max(self._delivered.get(where, 0), message.offset() + 1)

    def _abort(self) -> None:
        # If the broker is gone or the producer fenced, the open transaction times out unseen instead.
        with contextlib.suppress(KafkaException):
            self._producer.abort_transaction(self.timeout_s)

    def close(self) -> None:
        """Drops the producer; an open transaction (there is none after ``commit``) would abort."""
        self._producer.flush(0)
