"""`payable ui` runs `dagster dev` in the foreground: SIGTERM stops it and everything it started, even when
it was started in the background with SIGINT ignored (where `dagster dev` itself ignores SIGTERM)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# A stand-in for `dagster dev`: like it, SIGTERM does what SIGINT does (ignored when SIGINT is), it starts a
# worker that outlives it (its code servers and run workers), and SIGINT is its graceful shutdown.
TOOL = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
    worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_IGN); time.sleep(600)"])
    out = sys.argv[1]
    with open(out + ".tmp", "w") as f:
        json.dump({"tool": __import__("os").getpid(), "worker": worker.pid}, f)
    __import__("os").replace(out + ".tmp", out)
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        open(out + ".graceful", "w").close()
""")

SUPERVISOR = ("import sys; from payable.foreground import run_in_foreground; "
              "sys.exit(run_in_foreground([sys.executable, '-c', sys.argv[1], sys.argv[2]], grace_s=20))")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_until(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s"
        time.sleep(0.05)


def test_sigterm_stops_the_tool_gracefully_and_its_whole_process_group(tmp_path):
    pids_file = tmp_path / "pids.json"
    # started as `cmd &` from a script would be: SIGINT ignored, inherited by everything it starts
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, TOOL, str(pids_file)],
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_until(pids_file.exists, "tool started")
        pids = json.loads(pids_file.read_text())
        assert alive(pids["tool"]) and alive(pids["worker"])
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
    finally:
        supervisor.kill()
    assert Path(str(pids_file) + ".graceful").exists(), "the tool got SIGINT, its graceful shutdown"
    wait_until(lambda: not alive(pids["tool"]) and not alive(pids["worker"]), "process group gone", 10)


def test_the_tools_own_exit_code_is_returned():
    from payable.foreground import run_in_foreground

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert run_in_foreground([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before, "handlers restored"
