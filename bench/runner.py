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


@contextmanager
def task_stream(options: list[str]) -> Iterator[Callable[[], dict]]:
    """Records the Dask scheduler's task stream meanwhile (the runner's options name it; nothing for other
    runners); yields a function summarising what was recorded since: per worker, the seconds spent computing
    and the span from its first task's start to its last task's end, and per task group (``TrainGradients``,
    ``StackScores``, ...) its compute seconds. Where a 2-worker run loses time shows as a worker idle within
    the run's wall time, or as a group that ran on one worker alone."""
    address = next((o.partition("=")[2] for o in options if o.startswith("--dask_client_address=")), None)
    if address is None:
        yield dict
        return
    import time

    from distributed import Client

    with Client(address) as client:
        client.get_task_stream()  # installs the scheduler's recorder
        since = time.time()
        yield lambda: _summary(client.get_task_stream(start=since))


def _summary(records: list[dict]) -> dict:
    from dask.utils import key_split

    workers: dict[str, dict] = {}
    groups: dict[str, float] = {}
    for record in records:
        for part in record["startstops"]:
            if part["action"] != "compute":
                continue
            busy = part["stop"] - part["start"]
            w = workers.setdefault(record["worker"], {"compute_s": 0.0, "first": part["start"], "last": part["stop"]})
            w["compute_s"] += busy
            w["first"], w["last"] = min(w["first"], part["start"]), max(w["last"], part["stop"])
            group = key_split(record["key"])
            groups[group] = groups.get(group, 0.0) + busy
    start = min((w["first"] for w in workers.values()), default=0.0)
    return {"workers": {name: {"compute_s": round(w["compute_s"], 2), "first_task_at_s": round(w["first"] - start, 2),
                               "last_task_end_s": round(w["last"] - start, 2)} for name, w in sorted(workers.items())},
            "groups_compute_s": {g: round(s, 2) for g, s in sorted(groups.items(), key=lambda kv: -kv[1])}}


def warm_attribution() -> None:
    """What a long-running worker did long ago: import torch, transformers and the attribution code."""
    import pipelines.attribution.beam  # noqa: F401 - the import is the point


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
