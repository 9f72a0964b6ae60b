"""Quality bench: the LDS and canary AUC of the demo's influence runs, and what the LDS costs per budget.

Run from the repository root: ``.venv/bin/python -m bench.quality [--budgets 0,4,8]``. Runs ``payable demo``
(tiny GPT-2, its three garbage canaries planted in the science datanet) in a fresh data directory on free
ports, reads each run's figures back from the audit database, then re-scores every datanet in-process with
each LDS budget (retrained subsets), timing the whole run and the refits alone. Prints a table and writes
``bench/out/quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from payable import services
from payable.demo import run_demo
from payable.settings import Settings
from pipelines.attribution import ScoreArguments, attribute

OUT = Path(__file__).parent / "out"


def rescore(settings: Settings, datanet_id: int, budget: int) -> dict:
    """One attribution run of the datanet's adapter with ``budget`` LDS subsets, timed."""
    args = replace(ScoreArguments(), quality=replace(ScoreArguments().quality, lds_subsets=budget))
    started = time.perf_counter()
    result = attribute(settings, datanet_id, args=args, canaries_from_log=True)
    seconds = time.perf_counter() - started
    auc = result.table["canary_auc"][0].as_py()
    return {"datanet_id": datanet_id, "lds_subsets": budget, "contributions": result.table.num_rows,
            "lds": None if result.lds.value != result.lds.value else result.lds.value, "canary_auc": auc,
            "lds_seconds": round(result.lds.seconds, 2), "run_seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0,4,8", help="LDS subsets to re-score with, comma-separated")
    opts = parser.parse_args()
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        anvil, kafka = services.free_port(), services.free_port()
        settings = replace(Settings.from_env(Path(tmp) / "data"), anvil_port=anvil,
                           rpc_url=f"http://127.0.0.1:{anvil}", kafka_port=kafka,
                           kafka_bootstrap=f"127.0.0.1:{kafka}", local_chain=True, local_kafka=True)
        try:
            summary = run_demo(settings)
            rows = [rescore(settings, datanet_id, int(b)) for datanet_id in sorted(summary["datanets"].values())
                    for b in opts.budgets.split(",")]
        finally:
            services.down(settings)
    table = Table(title=f"Attribution quality of the demo's runs (load {os.getloadavg()[0]:.1f})")
    for column in ("datanet", "contributions", "LDS subsets", "LDS", "canary AUC", "LDS s", "run s"):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r["datanet_id"]), str(r["contributions"]), str(r["lds_subsets"]),
                      "-" if r["lds"] is None else f"{r['lds']:.3f}",
                      "-" if r["canary_auc"] is None else f"{r['canary_auc']:.3f}", f"{r['lds_seconds']:.1f}",
                      f"{r['run_seconds']:.1f}")
    console.print(table)
    console.print({"demo_quality": summary["quality"], "demo_total_seconds": summary["total_seconds"],
                   "demo_stage_seconds": summary["stage_seconds"]})
    OUT.mkdir(exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps({"demo": {k: summary[k] for k in (
        "quality", "total_seconds", "stage_seconds", "canaries")}, "rescored": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
