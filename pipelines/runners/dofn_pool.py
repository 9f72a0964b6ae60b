"""Each Dask worker process's set-up DoFn instances, reused bundle after bundle as Beam's own SDK harness does.

Unpickling a DoFn and running its ``setup`` can be the dearest part of a bundle: the attribution DoFn carries
the model and its checkpoints, and its ``setup`` builds the projections. Beam lets a runner reuse a DoFn
instance for many bundles once it is set up; what must be new per bundle is the output receiver and the
``start_bundle`` / ``finish_bundle`` calls (``pipelines.runners.dask._run_bundle``). So a worker keeps its
instances here, keyed by the pipeline run and the pickled DoFn's digest:

- an instance serves one bundle at a time (a worker with several threads sets up one per concurrent bundle);
- instances belong to one pipeline run: a later run unpickles and sets up afresh, so it never sees what an
  earlier run's ``setup`` loaded (a dataset's state, a model since retrained);
- ``teardown`` runs when the run ends (``release``, called on every worker by the runner), when a run's
  instances are evicted to bound memory (the least recently used run beyond ``MAX_RUNS``), or at exit.
"""

from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from apache_beam import DoFn
from apache_beam.internal import pickler
from apache_beam.runners.common import DoFnSignature

MAX_RUNS = 4
"""Runs whose instances a worker keeps at once; a run not released (its client died) is evicted after this."""


def dumps(fn: DoFn) -> bytes:
    """The DoFn as the pool loads it: Beam's pickler with zlib (its default, bz2, costs 5x the CPU each way on
    attribution's DoFns, which carry the model)."""
    return pickler.dumps(fn, use_zlib=True)


@dataclass
class SetUp:
    """A DoFn after ``setup``, with the signature every bundle's invoker is built from."""

    fn: DoFn
    signature: DoFnSignature

    @classmethod
    def load(cls, pickled: bytes) -> SetUp:
        fn = pickler.loads(pickled, use_zlib=True)
        signature = DoFnSignature(fn)
        signature.setup_lifecycle_method.method_value()
        return cls(fn, signature)

    def teardown(self) -> None:
        self.signature.teardown_lifecycle_method.method_value()


@dataclass
class DoFnPool:
    """Idle set-up instances per (run, digest); see the module docstring for the rules."""

    max_runs: int = MAX_RUNS
    _idle: OrderedDict[str, dict[str, list[SetUp]]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def instance(self, run: str, digest: str, pickled: bytes) -> Iterator[SetUp]:
        """A set-up instance of the DoFn ``pickled`` (whose digest is ``digest``) for one bundle of ``run``,
        returned to the pool when the bundle is done; an instance whose bundle failed is torn down instead,
        as Beam discards a DoFn that raised."""
        with self._lock:
            idle = self._idle.setdefault(run, {}).setdefault(digest, [])
            self._idle.move_to_end(run)
            instance = idle.pop() if idle else None
            evicted = self._evict()
        _teardown(evicted)
        instance = instance or SetUp.load(pickled)
        try:
            yield instance
        except BaseException:
            instance.teardown()
            raise
        with self._lock:
            self._idle.setdefault(run, {}).setdefault(digest, []).append(instance)

    def release(self, run: str) -> int:
        """Tears down ``run``'s idle instances; returns how many."""
        with self._lock:
            instances = [i for idle in self._idle.pop(run, {}).values() for i in idle]
        _teardown(instances)
        return len(instances)

    def release_all(self) -> None:
        for run in list(self._idle):
            self.release(run)

    def _evict(self) -> list[SetUp]:
        evicted = []
        while len(self._idle) > self.max_runs:
            _, by_digest = self._idle.popitem(last=False)
            evicted.extend(i for idle in by_digest.values() for i in idle)
        return evicted


def _teardown(instances: list[SetUp]) -> None:
    for instance in instances:
        instance.teardown()


POOL = DoFnPool()
"""This process's pool: a Dask worker's, once it ran a bundle."""
atexit.register(POOL.release_all)


def release(run: str) -> int:
    """Ends ``run`` on this worker (the runner calls it on every worker through ``Client.run``)."""
    return POOL.release(run)
