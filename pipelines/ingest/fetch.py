"""Fetches one span of blocks: logs in adaptive eth_getLogs ranges, the hashes of its newest blocks, and
every log decoded and encoded into ready-to-produce Kafka records (or dead letters).

This is the CPU-heavy half of ingesting (JSON parsing, ABI decoding, schema validation, JSON encoding),
so the ingester runs it in a worker process while the main process commits the previous span to Kafka.

A range that the node refuses ("query returned more than 10000 results", a timeout, a 5xx) is split in
two and each half tried again, down to single blocks, with exponential backoff while failures go on; an
unreachable node is retried until the backoff gives up. The hashes let the ingester follow the chain:
headers are linked by parentHash, and every log in a hashed block must carry that block's hash, or the
chain moved under the fetch (``ChainMoved``) and the span is fetched again after a reorg check.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pipelines.ingest.decode import Fact, LogDecoder, UndecodableLog, dead_letter
from pipelines.ingest.rpc import RpcClient, RpcError, RpcUnavailable
from pipelines.ingest.sink import Message
from schemas import events, topics

T = TypeVar("T")


class ChainMoved(RuntimeError):
    """The node's chain changed while a span was fetched (a reorg in progress)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between retries; gives up after ``attempts`` failures in a row."""

    first_s: float = 0.05
    max_s: float = 5.0
    attempts: int = 12

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.first_s * 2 ** (failures - 1))


@dataclass
class Span:
    """Everything the ingester commits for blocks [first, last]."""

    first: int
    last: int
    messages: list[Message]
    hashes_first: int                 # the block of hashes[0]
    hashes: list[str]                 # canonical hashes of blocks hashes_first..last
    parent_hash: str | None           # hash of block hashes_first - 1, to link with the stored window
    facts: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    dead_letters: int = 0
    logs: int = 0
    splits: int = 0


class Fetcher:
    """Fetches and decodes spans of one deployment's logs from one node."""

    def __init__(self, rpc_url: str, addresses: list[str], chain_id: int, window: int, backoff: Backoff,
                 timeout_s: float = 30.0):
        self.rpc = RpcClient(rpc_url, timeout_s)
        self.addresses = addresses
        self.chain_id = chain_id
        self.window = window
        self.backoff = backoff
        self.decoder = LogDecoder(chain_id)

    def retrying(self, what: str, call: Callable[..., T], *args: object) -> T:
        """``call(*args)``, retried with backoff while the node is unavailable or answers with errors."""
        failures = 0
        while True:
            try:
                return call(*args)
            except (RpcError, RpcUnavailable) as exc:
                failures += 1
                if failures >= self.backoff.attempts:
                    raise RpcUnavailable(f"{what}: gave up after {failures} attempts: {exc}") from exc
                time.sleep(self.backoff.delay(failures))

    def fetch(self, first: int, last: int) -> Span:
        """The span [first, last]; raises ChainMoved if the chain changed during the fetch."""
        hashes_first = max(first, last - self.window + 1)
        hashes, parent_hash = self._hashes(hashes_first, last) if self.window else ([], None)
        logs, splits = self._logs(first, last)
        for log in logs:
            number = _int(log.get("blockNumber"))
            if number is not None and hashes and hashes_first <= number <= last \
                    and str(log.get("blockHash")).lower() != hashes[number - hashes_first]:
                raise ChainMoved(f"a log of block {number} carries another block's hash")
        span = Span(first, last, [], hashes_first, hashes, parent_hash, logs=len(logs), splits=splits)
        self._encode(logs, span)
        return span

    def _hashes(self, first: int, last: int) -> tuple[list[str], str]:
        """Hashes of blocks first..last, checked to form one chain, and the hash of their parent."""
        headers = self.retrying("eth_getBlockByNumber", self.rpc.headers, list(range(first, last + 1)))
        for parent, child in itertools.pairwise(headers):
            if child["parentHash"] != parent["hash"]:
                raise ChainMoved(f"block {int(child['number'], 16)} does not follow the block before it")
        return [h["hash"].lower() for h in headers], headers[0]["parentHash"].lower()

    def _logs(self, first: int, last: int) -> tuple[list[dict], int]:
        """All logs in [first, last]: a refused range is halved, a refused single block retried."""
        pending, logs, failures, splits = [(first, last)], [], 0, 0
        while pending:
            low, high = pending.pop()
            try:
                logs.extend(self.rpc.get_logs(self.addresses, low, high))
                failures = 0
            except (RpcError, RpcUnavailable) as exc:
                failures += 1
                if failures >= self.backoff.attempts:
                    raise RpcUnavailable(f"eth_getLogs {low}..{high}: gave up after {failures} attempts: {exc}") \
                        from exc
                time.sleep(self.backoff.delay(failures))
                if high > low:
                    middle = (low + high) // 2
                    pending += [(middle + 1, high), (low, middle)]
                    splits += 1
                else:
                    pending.append((low, high))
        return logs, splits

    def _encode(self, logs: list[dict], span: Span) -> None:
        """Decodes and validates every log; keeps chain order across event types."""
        slots: list[tuple[str, bytes] | None] = []
        by_type: dict[str, tuple[events.EventType, list[int], list[dict]]] = {}
        for log in logs:
            try:
                fact = self.decoder.decode(log)
            except UndecodableLog as exc:
                fact = _dead_letter_fact(log, str(exc), self.chain_id)
                span.dead_letters += 1
            if isinstance(fact, str):
                span.ignored[fact] += 1
                continue
            event_type = fact.event_type
            group = by_type.setdefault(event_type.name, (event_type, [], []))
            group[1].append(len(slots))
            group[2].append(fact.record)
            slots.append((event_type.name, fact.key))
            if event_type is not events.DEAD_LETTER:
                span.facts[event_type.name] += 1
        values: list[bytes] = [b""] * len(slots)
        for event_type, indexes, records in by_type.values():
            for index, value in zip(indexes, events.encode(event_type, records), strict=True):
                values[index] = value
        span.messages = [(name, key, value) for (name, key), value in zip(slots, values, strict=True)]


def _dead_letter_fact(log: object, error: str, chain_id: int) -> Fact:
    return Fact(events.DEAD_LETTER, topics.chain_key(chain_id), dead_letter(log, error, chain_id))


def _int(value: object) -> int | None:
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        return None


# ---- worker process ------------------------------------------------------------------------------

_worker: Fetcher | None = None


def init_worker(*config: object) -> None:
    """ProcessPoolExecutor initializer: one Fetcher per worker process, reused across spans."""
    global _worker
    _worker = Fetcher(*config)


def fetch_in_worker(first: int, last: int) -> Span:
    return _worker.fetch(first, last)
