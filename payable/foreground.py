"""Running a long-lived tool in the foreground so that SIGTERM and Ctrl-C stop all of it.

``dagster dev`` maps SIGTERM to whatever its SIGINT disposition is; started from a script in the background
(``payable ui &``, a service manager, nohup), SIGINT is ignored, so SIGTERM is ignored too, and even when it
does stop, the code servers and run workers it started can outlive it. So payable does not exec such a tool:
it runs it as the leader of a process group of its own, forwards the first SIGTERM or SIGINT to it as SIGINT
(its graceful path), waits a grace period, then kills whatever is left of the group by its id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stop(Exception):
    """Raised by the signal handler to leave the wait for the child."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def run_in_foreground(command: Sequence[str], *, grace_s: float = 30.0) -> int:
    """Runs ``command`` until it exits (its exit code) or until this process gets SIGTERM/SIGINT (then 0,
    once the command's whole process group is gone)."""
    # A handler of our own (not SIG_IGN) is reset to the default in the child at exec, so the tool sees
    # SIGINT as an interrupt even when this process was started with SIGINT ignored.
    previous = {s: signal.signal(s, _raise_stop) for s in STOP_SIGNALS}
    child = None
    try:
        child = subprocess.Popen(list(command), start_new_session=True)
        return child.wait()
    except _Stop:
        for s in STOP_SIGNALS:  # a second signal during the shutdown does not cut it short
            signal.signal(s, signal.SIG_IGN)
        if child is not None:
            _stop_group(child, grace_s)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_group(child: subprocess.Popen, grace_s: float) -> None:
    """SIGINT to the leader, up to ``grace_s`` for it to exit, then SIGKILL to everything left in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
