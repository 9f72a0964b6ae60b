"""Usage events: one per finished request, built here, buffered and delivered to Kafka by one writer thread.

Requests never wait for Kafka: :meth:`UsageWriter.record` appends to an in-memory buffer and returns.
The writer thread sends what is buffered with payable's idempotent producer and drops an event from the
buffer only once the broker acknowledged it; when the broker is down, sends fail, the events stay, and
the thread retries with backoff (a fresh producer each time) until they are delivered. ``/metrics`` shows
the buffer depth, deliveries, failures and the last error. A stop flushes what it can within its timeout.

With a serving agent (``serving.agent``), ``record`` signs each event with the agent key before buffering it:
the pipeline pays only signed usage of a staked agent.

The buffer is memory only: what is still buffered when the process is killed is lost (a broker outage
is survived, a crash of the server during one is not).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from payable import kafka_log
from schemas import topics
from schemas.usage import USAGE_EVENT

if TYPE_CHECKING:
    from serving.agent import ServingAgent

log = logging.getLogger(__name__)


def usage_id(request_id: str) -> str:
    """The usage event's deterministic id: a hash of the request id (a retried request keeps its id)."""
    return "use-" + hashlib.sha256(f"usage|{request_id}".encode()).hexdigest()[:32]


def usage_event(*, request_id: str, model: str, adapters: Sequence[tuple[str, int, int, float]], base_model_hash: str,
                prompt_tokens: int, completion_tokens: int, latency_s: float, caller: str | None,
                finish_reason: str, retrieved_sources: Sequence[dict] = (),
                messages: Sequence[tuple[str, str]] = (), answer: str = "",
                source_words: Sequence[int] = (), influences: Sequence[dict] | None = None) -> dict:
    """A UsageEvent (v4) record, unsigned (``UsageWriter`` signs it); ``adapters`` are (adapter id, datanet id,
    dataset version, ensemble weight).

    The transcript (``messages``, ``answer``, ``source_words``) is kept only when sources were retrieved:
    context attribution needs it to rescore the answer, and nothing else puts a caller's text on the log.
    """
    rag = bool(retrieved_sources)
    return {
        "event_id": usage_id(request_id), "request_id": request_id, "model": model,
        "adapter_ids": [a[0] for a in adapters], "datanet_ids": [a[1] for a in adapters],
        "dataset_versions": [a[2] for a in adapters], "adapter_weights": [float(a[3]) for a in adapters],
        "base_model_hash": base_model_hash, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "latency_ms": round(latency_s * 1000.0, 3), "caller": caller, "finish_reason": finish_reason,
        "retrieved_sources": list(retrieved_sources), "served_at_ms": int(time.time() * 1000),
        "messages": [{"role": r, "content": c} for r, c in messages] if rag else None,
        "answer": answer if rag else None, "source_words": [int(w) for w in source_words] if rag else None,
        "influences": None if influences is None else list(influences),
        "agent": None, "signature": None,
    }


class UsageSink(Protocol):
    def record(self, event: dict) -> None: ...


@dataclass
class UsageCounters:
    recorded: int = 0
    delivered: int = 0
    send_failures: int = 0
    pending: int = 0


class UsageWriter:
    """Delivers recorded usage events to ``topic`` on ``bootstrap``, buffering through broker outages."""

    def __init__(self, bootstrap: str, topic: str = topics.USAGE, batch: int = 500, backoff_s: float = 0.5,
                 agent: ServingAgent | None = None) -> None:
        self.bootstrap, self.topic, self.batch, self.backoff_s = bootstrap, topic, batch, backoff_s
        self.agent = agent
        self.counters = UsageCounters()
        self.last_error: str | None = None
        self._buffer: list[dict] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._producer = None
        self._topic_ready = False
        self._thread = threading.Thread(target=self._loop, name="usage-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, event: dict) -> None:
        if self.agent is not None:
            event = self.agent.sign(event)
        USAGE_EVENT.to_batch([event])  # a malformed event is a bug here, not something to find on the log
        with self._cond:
            self._buffer.append(event)
            self.counters.recorded += 1
            self.counters.pending = len(self._buffer)
            self._cond.notify()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops after delivering the buffer, or after ``timeout_s`` (then reports what is left)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._buffer and time.monotonic() < deadline and self._thread.is_alive():
                self._cond.wait(timeout=0.1)
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 5)
        self._close_producer()
        if self._buffer:
            log.error("usage writer stopped with %d undelivered events", len(self._buffer))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._buffer[:self.batch]
            delivered = self._send(batch)
            with self._cond:
                sent = {id(e) for e in delivered}
                self._buffer = [e for e in self._buffer if id(e) not in sent]
                self.counters.delivered += len(delivered)
                self.counters.pending = len(self._buffer)
                self._cond.notify_all()
                if len(delivered) < len(batch):
                    self._cond.wait(timeout=self.backoff_s)

    def _send(self, batch: list[dict]) -> list[dict]:
        """Sends ``batch``; returns the events the broker acknowledged."""
        try:
            if not self._topic_ready:
                kafka_log.ensure_topics(self.bootstrap, [self.topic])
                self._topic_ready = True
            if self._producer is None:
                self._producer = kafka_log.make_producer(self.bootstrap, max_block_ms=2000, request_timeout_ms=2000,
                                                         delivery_timeout_ms=5000, retries=3)
            futures = kafka_log.produce(self._producer, USAGE_EVENT, batch, key=lambda e: e["event_id"].encode(),
                                        topic=self.topic)
            self._producer.flush(timeout=10)
        except Exception as exc:  # noqa: BLE001 - any broker failure: keep the events, retry later
            self._fail(exc)
            return []
        delivered, failed = [], None
        for event, future in zip(batch, futures, strict=True):
            if future.succeeded():
                delivered.append(event)
            else:
                failed = failed or future.exception or TimeoutError("not acknowledged")
        if failed is not None:
            self._fail(failed)
        return delivered

    def _fail(self, exc: BaseException) -> None:
        self.counters.send_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("usage events not delivered yet (%s); retrying", self.last_error)
        self._close_producer()

    def _close_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:
                log.debug("closing the usage producer failed", exc_info=True)
            self._producer = None

    def buffered(self) -> list[dict]:
        """The events not yet acknowledged by the broker (a copy)."""
        with self._cond:
            return list(self._buffer)

    def state(self) -> dict:
        with self._cond:
            return {**asdict(self.counters), "pending": len(self._buffer), "last_error": self.last_error}
