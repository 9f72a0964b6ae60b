"""The adapter cache: loaded adapters in an LRU bounded by count and by bytes, with pinning and counters.

Loading happens off the engine's loop: :meth:`AdapterCache.get` awaits a load running in a worker thread
(one load per adapter at a time; concurrent requests for it wait on the same load), while the batcher
keeps decoding rows whose adapters are resident. A load that fails (a corrupt file) is counted and
raised to every waiting request, and nothing is cached, so a repaired folder loads on the next request.

Eviction drops the least recently used unpinned adapters until both bounds hold. Rows already running
keep a reference to their adapter, so evicting it never disturbs them; it only means the next request
for it loads it again. Pinned adapters (``--pin``) never leave.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass

from serving.lora import AdapterLoadError, LoraAdapter


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_failures: int = 0
    loads: int = 0
    load_seconds_total: float = 0.0


@dataclass(frozen=True)
class CacheState:
    """A snapshot for /metrics, ``payable serve --status`` and Dagster."""

    resident: int
    resident_bytes: int
    pinned: int
    max_adapters: int
    max_bytes: int
    counters: dict[str, float]
    adapters: list[str]


class AdapterCache:
    """LRU of :class:`LoraAdapter` keyed by adapter key (an adapter id or an ensemble's canonical name)."""

    def __init__(self, max_adapters: int = 1024, max_bytes: int = 1 << 30, executor: Executor | None = None) -> None:
        if max_adapters < 1 or max_bytes < 1:
            raise ValueError("the adapter cache needs room for at least one adapter")
        self.max_adapters, self.max_bytes = max_adapters, max_bytes
        self.counters = CacheCounters()
        self._entries: OrderedDict[str, LoraAdapter] = OrderedDict()
        self._bytes = 0
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self._loading: dict[str, asyncio.Future] = {}
        self._executor = executor or ThreadPoolExecutor(max_workers=2, thread_name_prefix="adapter-load")
        self.last_error: dict[str, str] = {}

    def lookup(self, key: str) -> LoraAdapter | None:
        """The resident adapter (counted as a hit and made most recent), or ``None`` (not counted)."""
        with self._lock:
            adapter = self._entries.get(key)
            if adapter is not None:
                self._entries.move_to_end(key)
                self.counters.hits += 1
            return adapter

    async def get(self, key: str, load: Callable[[], LoraAdapter]) -> LoraAdapter:
        """The adapter for ``key``, loading it with ``load`` in a worker thread on a miss."""
        adapter = self.lookup(key)
        if adapter is not None:
            return adapter
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            adapter = await asyncio.get_running_loop().run_in_executor(self._executor, self._load, key, load)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(adapter)
            return adapter
        finally:
            del self._loading[key]

    def load_now(self, key: str, load: Callable[[], LoraAdapter]) -> LoraAdapter:
        """Synchronous :meth:`get` for callers without an event loop (start-up pinning, the benchmark)."""
        return self.lookup(key) or self._load(key, load)

    def _load(self, key: str, load: Callable[[], LoraAdapter]) -> LoraAdapter:
        start = time.perf_counter()
        try:
            adapter = load()
        except AdapterLoadError as exc:
            with self._lock:
                self.counters.load_failures += 1
                self.last_error[key] = str(exc)
            raise
        elapsed = time.perf_counter() - start
        with self._lock:
            self.counters.misses += 1
            self.counters.loads += 1
            self.counters.load_seconds_total += elapsed
            self.last_error.pop(key, None)
            self._insert(key, adapter)
        return adapter

    def put(self, key: str, adapter: LoraAdapter) -> None:
        """Caches an adapter built from resident ones (an ensemble), under the same bounds."""
        with self._lock:
            self._insert(key, adapter)

    def _insert(self, key: str, adapter: LoraAdapter) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[key] = adapter
        self._bytes += adapter.nbytes
        self._evict()

    def _evict(self) -> None:
        for key in list(self._entries):
            if len(self._entries) <= self.max_adapters and self._bytes <= self.max_bytes:
                return
            if key in self._pinned:
                continue
            self._bytes -= self._entries.pop(key).nbytes
            self.counters.evictions += 1

    def pin(self, key: str) -> None:
        """``key`` stays resident once loaded (it must be loaded for pinning to hold memory)."""
        with self._lock:
            self._pinned.add(key)

    def unpin(self, key: str) -> None:
        with self._lock:
            self._pinned.discard(key)
            self._evict()

    def state(self) -> CacheState:
        with self._lock:
            return CacheState(
                resident=len(self._entries), resident_bytes=self._bytes, pinned=len(self._pinned & set(self._entries)),
                max_adapters=self.max_adapters, max_bytes=self.max_bytes, counters=asdict(self.counters),
                adapters=list(self._entries),
            )
