"""The chain ingester: the logs of payable's contracts, past a confirmation depth, into Kafka as chain facts.

Every downstream stage replays what this writes (invariant 1), so it must write each fact exactly once,
never a fact that left the chain without retracting it, and never drop one silently.

* **Confirmations.** Only blocks at least ``confirmations`` below the head are ingested (default from
  ``Settings.confirmations``, 12: about half a minute on an L2 with 2-s blocks, and deep enough that their
  sequencer reorgs rarely reach it).
* **Reorgs.** The checkpoint keeps the canonical hashes of the last ``reorg_window`` blocks ingested.
  Each pass first compares the newest one with the node's; if it changed, the newest stored hash that is
  still canonical is the fork point, every fact emitted from a later block gets a FactRetracted (found
  by reading the facts topic back from the offsets the checkpoint remembers), an Alert says what
  happened, and ingesting resumes after the fork point, so facts whose transaction landed elsewhere are
  emitted again with their new block hash. A reorg that replaces even the oldest stored block is deeper
  than the window: the ingester cannot know which facts are gone, so it writes an Alert and stops with
  ``DeepReorg`` (non-zero exit for ``payable ingest``) instead of guessing.
* **Exactly once: Kafka transactions**, not idempotent produce plus ids. Idempotent produce only removes
  the producer's own retry duplicates; after a crash between producing and checkpointing, the restart
  would produce the chunk again and every consumer would have to deduplicate by id forever. With one
  transaction per chunk holding its facts, dead letters and the checkpoint (``sink.py``), a crash at any
  point leaves either the whole chunk and its checkpoint or neither visible to read_committed readers, and
  the restart resumes from that checkpoint. Ids stay deterministic anyway (invariant 2).
* **Failures.** A node that errors or times out is retried with backoff and smaller ranges (``fetch.py``);
  a Kafka failure drops the producer, backs off, reconnects (fencing the old transaction) and resumes from
  the last committed checkpoint. Both give up after ``Backoff.attempts`` failures in a row.
* **Speed.** During a backfill, spans are fetched and decoded in worker processes while this process
  commits the previous one (``bench/ingest.py`` measures it).

On a local dev chain that mines a block per transaction (anvil's automine), the last ``confirmations``
blocks stay unconfirmed until more blocks come: the tests and the benchmark mine empty blocks
(``anvil_mine``), and ``payable ingest --confirmations N`` lowers the depth for a demo. Nothing here knows
which node it talks to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import TYPE_CHECKING

from kafka.errors import KafkaError

from payable import kafka_log
from payable.settings import Settings
from pipelines.ingest import checkpoint, reorg
from pipelines.ingest.checkpoint import Checkpoint
from pipelines.ingest.fetch import Backoff, ChainMoved, Fetcher, Span, fetch_in_worker, init_worker
from pipelines.ingest.sink import Message, SinkError, TransactionalSink
from schemas import events, topics

if TYPE_CHECKING:  # web3 is slow to import, and the fetch workers never need it
    from payable.chain import Deployment

log = logging.getLogger(__name__)

# Failures of the Kafka side that a reconnect may cure.
KAFKA_FAILURES = (SinkError, KafkaError, TimeoutError, OSError)


class DeepReorg(RuntimeError):
    """The chain reorganised below the oldest block the ingester remembers; an Alert was written."""


@dataclass(frozen=True)
class IngestOptions:
    """How the ingester paces itself; the defaults suit an L2 behind a public RPC endpoint."""

    confirmations: int | None = None  # None: Settings.confirmations
    reorg_window: int = 128           # blocks whose hashes the checkpoint keeps
    first_span: int = 100             # blocks in the first eth_getLogs range
    max_span: int = 50_000            # never ask for more blocks than this at once
    target_logs: int = 20_000         # logs per range (and per Kafka transaction) to aim for
    backoff: Backoff = field(default_factory=Backoff)
    rpc_timeout_s: float = 30.0
    kafka_timeout_s: float = 30.0
    poll_interval_s: float = 2.0      # between passes of ``ingest_forever``
    workers: int = 1                  # processes fetching and decoding spans during a backfill (on 2 cores
                                      # shared with the node and the broker, a second one measured slower)


@dataclass
class IngestReport:
    """What one catch-up pass did."""

    chain_id: int
    from_block: int = 0
    next_block: int = 0
    head: int = 0
    safe_head: int = 0
    facts: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)
    dead_letters: int = 0
    retracted: int = 0
    alerts: list[str] = field(default_factory=list)
    logs: int = 0
    spans: int = 0
    retries: int = 0
    elapsed_s: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.facts.values())

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0


class Ingester:
    """Ingests one deployment's logs from one node into one Kafka cluster; see the module docstring."""

    def __init__(self, settings: Settings, deployment: Deployment, options: IngestOptions | None = None):
        self.options = options or IngestOptions()
        self.bootstrap = settings.kafka_bootstrap
        self.deployment = deployment
        self.confirmations = settings.confirmations if self.options.confirmations is None \
            else self.options.confirmations
        sources = [a.lower() for a in (deployment.registry, deployment.distributor, deployment.agents) if a]
        self.fetcher_config = (settings.rpc_url, sources,
                               deployment.chain_id, self.options.reorg_window, self.options.backoff,
                               self.options.rpc_timeout_s)
        self.fetcher = Fetcher(*self.fetcher_config)
        node_chain = self.fetcher.retrying("eth_chainId", self.fetcher.rpc.chain_id)
        if node_chain != deployment.chain_id:
            raise ValueError(f"the node at {settings.rpc_url} is chain {node_chain}, "
                             f"the deployment is on chain {deployment.chain_id}")
        self.transactional_id = f"payable-ingest-{deployment.chain_id}-{deployment.registry.lower()}"
        self.span = min(self.options.first_span, self.options.max_span)
        self.sink: TransactionalSink | None = None
        self.checkpoint: Checkpoint = checkpoint.initial(deployment)
        self.facts_next: list[int] = []

    # ---- connection to Kafka -------------------------------------------------------------------

    def _connect(self) -> None:
        """Registers the transactional producer (aborting a predecessor's open transaction), then loads
        the last committed checkpoint and the facts topic's end offsets."""
        kafka_log.ensure_topics(self.bootstrap)
        self.sink = TransactionalSink(self.bootstrap, self.transactional_id, self.options.kafka_timeout_s)
        self.checkpoint = checkpoint.load(self.bootstrap, self.deployment)
        ends = kafka_log.end_offsets(self.bootstrap, topics.CHAIN_FACTS)
        self.facts_next = [ends[p] for p in sorted(ends)]

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def __enter__(self) -> Ingester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- passes ------------------------------------------------------------------------------------

    def catch_up(self) -> IngestReport:
        """One pass: every block up to head - confirmations, reorgs handled; retries Kafka failures."""
        report = IngestReport(self.deployment.chain_id)
        started, failures, seen_seq = time.monotonic(), 0, None
        while True:
            try:
                if self.sink is None:
                    self._connect()
                if seen_seq is None:
                    report.from_block = self.checkpoint.next_block
                seen_seq = self.checkpoint.seq
                self._pass(report)
                break
            except ChainMoved as exc:
                failures = self._failed(failures, seen_seq, exc, report)
            except KAFKA_FAILURES as exc:
                self.close()
                failures = self._failed(failures, seen_seq, exc, report)
        report.next_block = self.checkpoint.next_block
        report.elapsed_s = time.monotonic() - started
        return report

    def _failed(self, failures: int, seen_seq: int | None, exc: Exception, report: IngestReport) -> int:
        """Counts a failure (reset by progress since the last one), backs off, or gives up."""
        failures = 1 if seen_seq is not None and self.checkpoint.seq != seen_seq else failures + 1
        report.retries += 1
        if failures >= self.options.backoff.attempts:
            raise exc
        delay = self.options.backoff.delay(failures)
        log.warning("ingest: %s; retrying in %.2f s", exc, delay)
        time.sleep(delay)
        return failures

    def _pass(self, report: IngestReport) -> None:
        head = self.fetcher.retrying("eth_blockNumber", self.fetcher.rpc.block_number)
        safe = head - self.confirmations
        report.head, report.safe_head = head, safe
        self._check_reorg(head, report)
        first = self.checkpoint.next_block
        if first > safe:
            return
        many = safe - first + 1 > self.span
        fetcher = _WorkerFetch(self.fetcher_config, self.options.workers) if many else _InlineFetch(self.fetcher)
        with fetcher:
            pending: deque[Future] = deque()
            following = first
            while pending or following <= safe:
                while following <= safe and len(pending) < fetcher.depth:
                    last = min(following + self.span - 1, safe)
                    pending.append(fetcher.submit(following, last))
                    following = last + 1
                span = pending.popleft().result()
                self._resize(span)
                self._commit_span(span, report)

    def _resize(self, span: Span) -> None:
        """Aims the next range at ``target_logs`` logs; halves it after a range had to be split."""
        blocks = span.last - span.first + 1
        if span.splits:
            self.span = max(1, blocks // 2)
            return
        wanted = blocks * self.options.target_logs // max(span.logs, 1)
        self.span = max(1, min(self.options.max_span, blocks * 4, max(blocks // 4, wanted)))

    def _commit_span(self, span: Span, report: IngestReport) -> None:
        cp = self.checkpoint
        if span.first != cp.next_block:
            raise ChainMoved(f"span starts at {span.first}, the checkpoint at {cp.next_block}")
        if span.hashes_first == cp.next_block and cp.block_hashes and span.parent_hash != cp.block_hashes[-1]:
            raise ChainMoved(f"block {span.first} does not follow the stored block {cp.next_block - 1}")
        hashes = reorg.extend_window(cp.block_hashes, cp.next_block, span.hashes_first, span.hashes,
                                     self.options.reorg_window)
        next_block = span.last + 1
        marks = reorg.trim_marks([*cp.mark_blocks, span.first], [*cp.mark_offsets, list(self.facts_next)],
                                 next_block - len(hashes))
        self._commit(span.messages, cp.successor(next_block=next_block, block_hashes=hashes,
                                                 mark_blocks=marks[0], mark_offsets=marks[1]))
        report.facts.update(span.facts)
        report.ignored.update(span.ignored)
        report.dead_letters += span.dead_letters
        report.logs += span.logs
        report.spans += 1

    def _commit(self, messages: list[Message], successor: Checkpoint) -> None:
        """One transaction: ``messages`` and the checkpoint that covers them."""
        successor = replace(successor, confirmations=self.confirmations)  # the depth travels with the data
        (value,) = events.encode(events.INGEST_CHECKPOINT, [successor.record()])
        key = topics.chain_key(self.deployment.chain_id)
        delivered = self.sink.commit([*messages, (events.INGEST_CHECKPOINT.name, key, value)])
        for (topic, partition), offset in delivered.items():
            if topic == topics.CHAIN_FACTS:
                self.facts_next += [0] * (partition + 1 - len(self.facts_next))
                self.facts_next[partition] = max(self.facts_next[partition], offset)
        self.checkpoint = successor

    # ---- reorgs --------------------------------------------------------------------------------------

    def _check_reorg(self, head: int, report: IngestReport) -> None:
        """Compares the stored window with the node's chain; retracts or raises DeepReorg on a change."""
        cp = self.checkpoint
        if not cp.block_hashes:
            return
        newest = cp.next_block - 1
        if newest <= head and self._hashes([newest])[newest] == cp.block_hashes[-1]:
            return
        canonical = self._hashes([n for n in range(cp.window_first, cp.next_block) if n <= head])
        ancestor = reorg.fork_point(cp.next_block, cp.block_hashes,
                                    [canonical.get(n) for n in range(cp.window_first, cp.next_block)])
        if ancestor is None:
            self._deep_reorg(head, canonical.get(cp.window_first), report)
        self._retract(ancestor, report)

    def _hashes(self, numbers: list[int]) -> dict[int, str]:
        headers = self.fetcher.retrying("eth_getBlockByNumber", self.fetcher.rpc.headers, numbers)
        return {n: h["hash"].lower() for n, h in zip(numbers, headers, strict=True)}

    def _deep_reorg(self, head: int, canonical_oldest: str | None, report: IngestReport) -> None:
        cp = self.checkpoint
        message = (f"chain {cp.chain_id} reorganised below block {cp.window_first}, the oldest of the "
                   f"{len(cp.block_hashes)} blocks the ingester keeps: facts before it may be gone; "
                   f"ingesting stopped")
        details = {"window_first": cp.window_first, "next_block": cp.next_block, "head": head,
                   "stored_hash": cp.block_hashes[0], "canonical_hash": canonical_oldest}
        self._commit([self._alert("reorg-beyond-window", message, details)], cp.successor())
        report.alerts.append(message)
        raise DeepReorg(message)

    def _retract(self, ancestor: int, report: IngestReport) -> None:
        """Retracts every live fact of the blocks after ``ancestor`` and rewinds to ``ancestor + 1``."""
        cp = self.checkpoint
        keep = ancestor + 1 - cp.window_first
        orphaned = set(cp.block_hashes[keep:])
        starts = reorg.start_offsets(cp.mark_blocks, cp.mark_offsets, ancestor + 1, len(self.facts_next))
        orphans = reorg.live_orphans(self._read_facts(starts), orphaned)
        reason = f"reorg: blocks {ancestor + 1}..{cp.next_block - 1} left the canonical chain"
        records = [reorg.retraction(name, record, reason) for _, name, record in orphans]
        values = events.encode(events.FACT_RETRACTED, records)
        retractions = [(events.FACT_RETRACTED.name, key, value)
                       for (key, _, _), value in zip(orphans, values, strict=True)]
        message = f"{reason}; {len(records)} facts retracted"
        details = {"fork_point": ancestor, "orphaned_hashes": sorted(orphaned), "retracted": len(records)}
        marks = [(b, o) for b, o in zip(cp.mark_blocks, cp.mark_offsets, strict=True) if b <= ancestor]
        self._commit([*retractions, self._alert("reorg", message, details)], cp.successor(
            next_block=ancestor + 1, block_hashes=cp.block_hashes[:keep],
            mark_blocks=[b for b, _ in marks], mark_offsets=[o for _, o in marks]))
        report.retracted += len(records)
        report.alerts.append(message)

    def _read_facts(self, starts: list[int]) -> list[tuple[bytes, str, dict]]:
        """(key, type name, record) of the facts topic from ``starts`` to its end, in log order per key.

        A message that does not decode is skipped: it is no fact this ingester wrote, and the validate
        stage dead-letters it.
        """
        ends = kafka_log.end_offsets(self.bootstrap, topics.CHAIN_FACTS)
        read = []
        for partition, end in sorted(ends.items()):
            start = starts[partition] if partition < len(starts) else 0
            for message in kafka_log.read_range(self.bootstrap, topics.CHAIN_FACTS, partition, start, end):
                try:
                    event_type, record = events.decode(message.value, message.headers)
                except events.SchemaError:
                    continue
                read.append((message.key or b"", event_type.name, record))
        return read

    def _alert(self, kind: str, message: str, details: dict) -> Message:
        body = json.dumps(details, sort_keys=True)
        record = {"event_id": f"{self.deployment.chain_id}:{kind}:{self.checkpoint.seq + 1}:{self.checkpoint.scope}",
                  "kind": kind, "message": message, "details": body}
        (value,) = events.encode(events.ALERT, [record])
        return events.ALERT.name, topics.chain_key(self.deployment.chain_id), value


class _InlineFetch:
    """Fetches in this process: for a pass of one span, where a worker would not pay for its start-up."""

    depth = 1

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher

    def submit(self, first: int, last: int) -> Future:
        future: Future = Future()
        try:
            future.set_result(self.fetcher.fetch(first, last))
        except Exception as exc:  # noqa: BLE001 - delivered through the future like the worker's
            future.set_exception(exc)
        return future

    def __enter__(self) -> _InlineFetch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _WorkerFetch:
    """Fetches in worker processes, so the next spans decode while this process commits one; keeps one
    span more in flight than there are workers, so none waits while a commit runs."""

    def __init__(self, config: tuple, workers: int):
        self.depth = workers + 1
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                                        initargs=config)

    def submit(self, first: int, last: int) -> Future:
        return self.pool.submit(fetch_in_worker, first, last)

    def __enter__(self) -> _WorkerFetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---- entry points --------------------------------------------------------------------------------

def ingest_until_head(settings: Settings, deployment: Deployment,
                      options: IngestOptions | None = None) -> IngestReport:
    """One catch-up pass to head - confirmations; raises DeepReorg after alerting on a too-deep reorg."""
    with Ingester(settings, deployment, options) as ingester:
        return ingester.catch_up()


def ingest_forever(settings: Settings, deployment: Deployment, options: IngestOptions | None = None,
                   stop: threading.Event | None = None,
                   on_pass: Callable[[IngestReport], None] | None = None) -> None:
    """Catch-up passes every ``poll_interval_s`` until ``stop`` is set; raises DeepReorg like above."""
    stop = stop or threading.Event()
    with Ingester(settings, deployment, options) as ingester:
        while not stop.is_set():
            report = ingester.catch_up()
            if on_pass is not None:
                on_pass(report)
            stop.wait(ingester.options.poll_interval_s)
