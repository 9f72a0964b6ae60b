"""Real multi-process Beam engines on this machine, on 127.0.0.1: a Dask cluster, or Prism with a worker pool.

The tests (``tests/conftest.py``) and the benchmarks (``bench/runner.py``) run the pipelines on them, so
that "on a distributed runner" means separate OS processes exchanging pickled bundles over the network,
as on a cluster spanning machines. Each yields the Beam options that select it, which is all a pipeline
is given (the same options a user puts in PAYABLE_BEAM_OPTIONS). Processes are stopped by PID.

- Dask: one scheduler and N single-threaded worker processes, run through the project's DaskRunner.
- Prism (Beam's portable reference runner, a Go program that ``make prism``, part of ``make test``, builds
  into PRISM): its job server and a Beam worker pool that starts each SDK harness as its own Python process
  (``--environment_type=EXTERNAL``), run through Beam's stock PortableRunner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apache_beam.version import __version__ as beam_version

from payable import services

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / ".cache" / "prism" / beam_version / "bin" / "prism"  # the version the SDK speaks to


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""Each worker process is one Beam worker of one thread: native thread pools of one thread too, so N workers
on N cores do not oversubscribe them (torch's own is set by the DoFns that use it)."""


def _environment() -> dict[str, str]:
    """Worker processes unpickle DoFns defined in the repository (the tests' own too): they import from its
    root, as a real cluster's workers would from the shipped package, and find this interpreter first."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **ONE_THREAD, "PYTHONPATH": path,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


@contextmanager
def _processes(commands: list[tuple[list[str], int | None]], logs: Path, timeout_s: float) -> Iterator[None]:
    """Starts each command in order, logging to ``logs/<i>.log`` and waiting for its port where one is
    given; stops them all by PID, in reverse order, however the block ends."""
    logs.mkdir(parents=True, exist_ok=True)
    env, processes = _environment(), []
    try:
        for i, (command, port) in enumerate(commands):
            with open(logs / f"{i}.log", "wb") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=env, cwd=ROOT))
            deadline = time.monotonic() + timeout_s
            while port is not None and not services.port_open(port):
                if time.monotonic() > deadline or processes[-1].poll() is not None:
                    raise services.ServiceError(f"{command[0]} did not start: {(logs / f'{i}.log').read_text()}")
                time.sleep(0.1)
        yield
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def local_dask_cluster(workers: int, logs: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """Starts the scheduler, then ``workers`` worker processes; yields ``tcp://127.0.0.1:PORT`` once all
    workers joined.

    Without a nanny: a nanny starts its worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (Dask's
    ``distributed.nanny.pre-spawn-environ``), which makes glibc map and unmap every large torch temporary:
    scoring attribution gradients took 7.3 s of system time and 12x the page faults (13.8 CPU-s against
    6.6 without it, measured here), and the nanny process burns CPU of its own. A cluster of your own running
    torch DoFns wants that setting off too."""
    from distributed import Client

    dask, port = str(Path(sys.executable).with_name("dask")), services.free_port()
    address = f"tcp://127.0.0.1:{port}"
    commands = [([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], port)] + [
        ([dask, "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
          "--name", f"w{i}", "--local-directory", str(logs / f"w{i}")], None) for i in range(workers)]
    with _processes(commands, logs, timeout_s):
        with Client(address, timeout=timeout_s) as client:
            client.wait_for_workers(workers, timeout=timeout_s)
        yield address


def dask_options(address: str, partitions: int | None = None) -> list[str]:
    """The Beam options that run a pipeline on the cluster at ``address`` through the project's runner, each
    ``Create`` in ``partitions`` bundles (by default one per worker thread)."""
    return ["--runner=pipelines.runners.dask.DaskRunner", f"--dask_client_address={address}",
            *([f"--dask_npartitions={partitions}"] if partitions else [])]


@contextmanager
def local_prism(logs: Path, timeout_s: float = 120.0) -> Iterator[list[str]]:
    """Starts a Beam worker pool and a Prism job server; yields the Beam options that run a pipeline on them.
    Needs ``make prism`` (it builds PRISM)."""
    if not PRISM.exists():
        raise services.ServiceError(f"{PRISM} is missing: run `make prism` (it builds Prism with Go)")
    pool, job = services.free_port(), services.free_port()
    commands = [([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool}"],
                 pool),
                ([str(PRISM), "--job_port", str(job), "--serve_http=false", "--log_level", "warn"], job)]
    with _processes(commands, logs, timeout_s):
        yield prism_options(f"localhost:{job}", f"localhost:{pool}")


def prism_options(job_endpoint: str, worker_pool: str) -> list[str]:
    """The Beam options that run a pipeline on the Prism job server at ``job_endpoint``, its SDK harnesses
    started by the worker pool at ``worker_pool``."""
    return ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", "--environment_type=EXTERNAL",
            f"--environment_config={worker_pool}"]
