"""A real-browser check of the operators' UI: serve Dagster over a data directory, screenshot the asset
graph in headless Chromium, and assert through GraphQL that every asset of the loop is materialized and
every asset check passed.

``python -m orchestration.ui_check [--data-dir DIR] [--screenshot PNG]`` (``make ui-check`` after
``make demo``). Exits non-zero, naming the offenders, when an asset is unmaterialized or a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestration.instance import prepare_home
from payable.services import REPO_ROOT, free_port
from payable.settings import Settings

LOOP_ASSETS = ("chain_events", "contribution_verdicts", "datanet_datasets", "lora_adapters", "influence_scores",
               "model_commitments", "retrieval_index", "served_models", "usage_events", "context_attribution",
               "reward_epochs", "usage_rewards", "onchain_payouts", "audit_tables")
DEFAULT_SCREENSHOT = REPO_ROOT / "docs" / "img" / "asset-graph.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000", "--window-size=1400,900", "--hide-scrollbars"]

ASSETS_QUERY = """
query { assetNodes {
  assetKey { path }
  isPartitioned
  partitionStats { numMaterialized numPartitions }
  assetMaterializations(limit: 1) { runId }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } }
} }"""


@dataclass(frozen=True)
class UiReport:
    unmaterialized: list[str]
    failed_checks: list[str]
    checks_passed: int
    screenshot: Path

    @property
    def ok(self) -> bool:
        return not self.unmaterialized and not self.failed_checks and self.screenshot.stat().st_size > 0


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def _wait_ready(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {process.returncode}: see {log}")
        try:
            graphql(port, "query { version }")
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"dagster-webserver did not answer on 127.0.0.1:{port} in {timeout_s:.0f} s: see {log}")


def inspect(port: int) -> tuple[list[str], list[str], int]:
    """(unmaterialized loop assets, failed checks, passed checks) as the UI's own API reports them."""
    nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, ASSETS_QUERY)["assetNodes"]}
    unmaterialized = []
    for name in LOOP_ASSETS:
        node = nodes.get(name)
        stats = node and node["partitionStats"]
        done = node is not None and (bool(node["assetMaterializations"]) if not node["isPartitioned"]
                                     else bool(stats) and stats["numMaterialized"] == stats["numPartitions"] > 0)
        if not done:
            unmaterialized.append(name)
    failed, passed = [], 0
    for name, node in sorted(nodes.items()):
        for check in node["assetChecksOrError"].get("checks", []):
            status = (check["executionForLatestMaterialization"] or {}).get("status")
            if status == "SUCCEEDED":
                passed += 1
            else:
                failed.append(f"{name}:{check['name']}={status}")
    return unmaterialized, failed, passed


def screenshot(url: str, target: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RuntimeError("chromium is not installed (Debian package `chromium`): apt-get install -y chromium")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}", url],
                       check=True, capture_output=True, timeout=180)


def check_ui(settings: Settings, target: Path = DEFAULT_SCREENSHOT) -> UiReport:
    """Serves the UI over ``settings``' data directory, screenshots the asset graph, inspects it."""
    home = prepare_home(settings)
    port = free_port()
    log = settings.log_dir / "dagster-webserver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"DAGSTER_HOME": str(home), "PAYABLE_DATA_DIR": str(settings.data_dir),
                        "PAYABLE_RPC_URL": settings.rpc_url, "KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    webserver = str(Path(sys.executable).with_name("dagster-webserver"))
    with open(log, "ab") as stream:
        process = subprocess.Popen([webserver, "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)],
                                   cwd=REPO_ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_ready(port, process, log)
        graphql(port, "mutation { setNuxSeen }")  # or a welcome dialog covers the page
        unmaterialized, failed, passed = inspect(port)
        screenshot(f"http://127.0.0.1:{port}/asset-groups", target)
        screenshot(f"http://127.0.0.1:{port}/assets", target.with_name(target.stem + "-catalog.png"))
        screenshot(f"http://127.0.0.1:{port}/assets/influence_scores?view=partitions&partition=dn-1",
                   target.with_name(target.stem + "-influence.png"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return UiReport(unmaterialized, failed, passed, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--screenshot", type=Path, default=DEFAULT_SCREENSHOT)
    args = parser.parse_args()
    report = check_ui(Settings.from_env(args.data_dir), args.screenshot)
    print(json.dumps({"ok": report.ok, "unmaterialized": report.unmaterialized, "failed_checks": report.failed_checks,
                      "checks_passed": report.checks_passed, "screenshot": str(report.screenshot)}))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
