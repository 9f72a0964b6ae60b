"""The bench scripts' one way to pick where a Beam stage runs: ``--runner in-process|dask --workers N``.

``dask`` starts a real local cluster (``pipelines.runners.cluster``: a scheduler and N single-threaded
worker processes) for the run and hands the stage the Beam options that select the project's DaskRunner,
the same options a user would put in PAYABLE_BEAM_OPTIONS. ``in-process`` is Beam's FnApiRunner in this
process. Also the load average and the CPU time of this process and its children (the cluster's workers
included), which every figure taken on the shared machine carries.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.runners import IN_PROCESS
from pipelines.runners.cluster import dask_options, local_dask_cluster

RUNNERS = ("in-process", "dask")


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", choices=RUNNERS, default=None,
                        help="run the Beam stage on this runner (dask: a local cluster of --workers processes)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1 thread each)")


@contextmanager
def beam_runner(runner: str, workers: int, partitions: int | None = None,
                warm_up: Callable[[], object] | None = None) -> Iterator[list[str]]:
    """Beam options selecting ``runner``; for ``dask`` a cluster of ``workers`` processes lives meanwhile,
    each ``Create`` split into ``partitions`` bundles (by default the runner's: one per worker).
    ``warm_up`` runs once in every worker process before the options are handed out (what a long-lived
    worker has done long before: imports, one-off tables), so the timed run measures the stage itself."""
    if runner == "in-process":
        if warm_up:
            warm_up()
        yield list(IN_PROCESS)
        return
    from distributed import Client

    with tempfile.TemporaryDirectory(prefix="bench-dask-") as logs, \
            local_dask_cluster(workers, Path(logs)) as address:
        if warm_up:
            with Client(address) as client:
                client.run(warm_up)
        yield dask_options(address, partitions)


def cpu_seconds() -> float:
    """CPU time of this process and every descendant, live (a cluster's workers) or finished (a process
    pool's): throughput per CPU-second, the figure that contention on a shared machine disturbs least."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
