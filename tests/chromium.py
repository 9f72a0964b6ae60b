"""Debian's headless Chromium driven over the DevTools protocol (a websocket), for tests of served pages.

The browser is a real process with a fresh profile; it picks its own debugging port and writes it to the
profile's ``DevToolsActivePort`` file, so nothing races for a port. Tests wait on a condition in the page
(``wait_for``) with a deadline, never on a fixed sleep, and read what the page shows with ``evaluate``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from websockets.sync.client import connect

from orchestration.ui_check import CHROMIUM_FLAGS

FLAGS = [f for f in CHROMIUM_FLAGS if not f.startswith(("--virtual-time-budget", "--window-size"))]


class Chromium:
    """One headless browser with one page; use as a context manager (the process is stopped on exit)."""

    def __init__(self, width: int = 1200, height: int = 900, timeout_s: float = 60.0) -> None:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            raise RuntimeError("chromium is not installed (Debian package `chromium`): apt-get install -y chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="payable-chromium-")
        self._process = subprocess.Popen(
            [browser, *FLAGS, f"--window-size={width},{height}", f"--user-data-dir={self._profile.name}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._ids = itertools.count(1)
        self._connection = ExitStack()
        try:
            self._socket = self._connection.enter_context(connect(
                self._page_socket(Path(self._profile.name), timeout_s), max_size=None, open_timeout=timeout_s))
        except BaseException:
            self.close()
            raise

    def _page_socket(self, profile: Path, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        port_file = profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode} during start-up")
            lines = port_file.read_text().split() if port_file.exists() else []
            if lines:
                with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list", timeout=10) as response:
                    pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not open its DevTools port in {timeout_s:.0f} s")

    def call(self, method: str, **params) -> dict:
        """Sends one DevTools command and returns its result (events arriving meanwhile are dropped)."""
        call_id = next(self._ids)
        self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def navigate(self, url: str, timeout_s: float = 60.0) -> None:
        """Loads ``url``; returns once the new document has replaced the old one (marked beforehand, so a
        condition waited on next is never read from the page being left)."""
        self.evaluate("window.__leaving = true")
        self.call("Page.navigate", url=url)
        self.wait_for("window.__leaving === undefined", timeout_s)

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 120.0):
        """Polls ``expression`` until it is truthy (an exception, as while the page is still loading, counts
        as false); returns its value, or fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        guarded = f"(() => {{ try {{ return {expression}; }} catch (error) {{ return null; }} }})()"
        while time.monotonic() < deadline:
            value = self.evaluate(guarded)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"the page never satisfied {expression!r} in {timeout_s:.0f} s")

    def screenshot(self, target: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    def close(self) -> None:
        self._connection.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        # Chromium's helpers (its own session) can outlive the browser and still write to the profile.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self._profile.cleanup()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
