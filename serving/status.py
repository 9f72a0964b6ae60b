"""A running server's state as its operators see it: where it listens, its models, its /metrics.

Standard library only, so ``payable serve --status`` and the Dagster asset read a server without
importing torch. A server started by ``payable serve`` leaves ``<data_dir>/run/serve.json``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from payable.settings import Settings

PREFIX = "payable_serve_"


class NotServing(RuntimeError):
    """No server runs for this data directory, or it does not answer."""


@dataclass(frozen=True)
class ServerStatus:
    url: str
    pid: int
    models: list[str]
    metrics: dict[str, float]
    """Metric name without the ``payable_serve_`` prefix -> value."""

    @property
    def agent(self) -> str | None:
        """The serving agent's address (the label of ``agent_info``), None if the server signs nothing."""
        info = next((name for name in self.metrics if name.startswith("agent_info{")), None)
        return info.split('"')[1] if info else None

    @property
    def agent_standing(self) -> str:
        """staked | not staked (its usage is not paid) | unknown."""
        return {1.0: "staked", 0.0: "not staked (its usage is not paid)"}.get(self.metrics.get("agent_staked", -1),
                                                                              "unknown")


def state_file(settings: Settings) -> Path:
    return settings.run_dir / "serve.json"


def parse_metrics(text: str) -> dict[str, float]:
    """Metric name -> value from Prometheus' text format (payable's /metrics has no labels)."""
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def read_status(settings: Settings, timeout_s: float = 5.0) -> ServerStatus:
    path = state_file(settings)
    if not path.exists():
        raise NotServing(f"no server is running for {settings.data_dir} (no {path}); start one with `payable serve`")
    where = json.loads(path.read_text())
    url = f"http://{where['host']}:{where['port']}"
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as response:
            metrics = parse_metrics(response.read().decode())
        with urllib.request.urlopen(f"{url}/v1/models", timeout=timeout_s) as response:
            models = [m["id"] for m in json.loads(response.read())["data"]]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise NotServing(f"the server at {url} (pid {where['pid']}) does not answer: {exc}") from None
    return ServerStatus(url, int(where["pid"]), models, {k.removeprefix(PREFIX): v for k, v in metrics.items()})
