"""Gradient memory bench: the peak resident growth of one per-example-gradient batch against ``sizing.py``'s count.

Run from the repository root: ``.venv/bin/python -m bench.gradient_memory [--base tiny-gpt2 smollm2-135m-instruct]
[--points 1x48,2x48,4x48,4x32]``. For each base model, in a child process of its own (glibc's mmap threshold fixed,
so freed tensors go back to the system and one point's peak does not hide in the next one's baseline): the base with
LoRA r=8 on the architecture's default targets, then for each point N x L one ``projected_gradients`` batch of N
random examples of L tokens at one checkpoint, its peak resident growth (``VmHWM`` reset through
``/proc/self/clear_refs`` before, minus ``VmRSS`` before) against ``sizing.estimated_bytes`` counted with
``KAPPA = 1``: the marginal growth of an example (between two points of one length) is what the count must match;
``sizing.KAPPA`` adds what a long-running process keeps beyond it (bench/README.md).
The child also times loading the base (for SmolLM2: dequantizing its GGUF). Prints a table and writes
``bench/out/gradient-memory.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("bench/out/gradient-memory.json")
_KB = 1024


def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * _KB


def measure(base: str, points: list[tuple[int, int]]) -> list[dict]:
    """In this process: each point's peak growth, counted bytes and their ratio."""
    import torch

    from pipelines.attribution import sizing
    from pipelines.attribution.gradients import Layout, Projector, projected_gradients
    from pipelines.attribution.task import LoRALanguageModelTask
    from pipelines.training.arguments import BaseModelSpec, TrainingArguments
    from pipelines.training.base_model import load_model
    from pipelines.training.lora import adapter_state, attach_lora
    from pipelines.training.train import resolved

    started = time.perf_counter(), time.process_time()
    args = resolved(TrainingArguments(base=BaseModelSpec(name=base)))
    task = LoRALanguageModelTask(attach_lora(load_model(args.base), args))
    load = {"load_wall_s": round(time.perf_counter() - started[0], 1),
            "load_cpu_s": round(time.process_time() - started[1], 1)}
    params = task.params(adapter_state(task.model))
    projector = Projector(Layout.of(task, params, 256), seed=0)
    shape = sizing.ModelShape.of(task.model.config)
    attributed = sum(p.numel() for p in params.values())
    rows = []
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    for n, length in [(1, 8), *points]:  # the first call warms up (lazy kernels, projection blocks), not reported
        batch = {"input_ids": torch.randint(0, shape.vocab, (n, length), generator=generator),
                 "attention_mask": torch.ones((n, length), dtype=torch.long)}
        gc.collect()
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        with torch.no_grad():
            projected_gradients(task, [params], batch, projector)
        grown = _status("VmHWM") - before
        counted = n * int(sizing.estimated_bytes(shape, length, attributed) / sizing.KAPPA)
        rows.append({"base": base, "examples": n, "tokens": length, "peak_growth_mb": round(grown / 2**20, 1),
                     "counted_mb": round(counted / 2**20, 1), "ratio": round(grown / counted, 3),
                     "rss_before_mb": round(before / 2**20), "attributed_weights": attributed, **load})
    return rows[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="+", default=["tiny-gpt2", "smollm2-135m-instruct"])
    parser.add_argument("--points", default="1x48,2x48,4x48,4x32,8x32", help="N x L points, comma-separated")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    points = [tuple(int(x) for x in p.split("x")) for p in opts.points.split(",")]
    if opts.child:
        print(json.dumps(measure(opts.base[0], points)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rows = []
    for base in opts.base:
        out = subprocess.run([sys.executable, "-m", "bench.gradient_memory", "--child", "--base", base,
                              "--points", opts.points], env=env, check=True, capture_output=True, text=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    from rich.console import Console
    from rich.table import Table

    from pipelines.attribution import sizing

    table = Table(title=f"peak resident growth of one gradient batch vs sizing.py's count (KAPPA = {sizing.KAPPA})")
    for column in ("base", "N x L", "measured MB", "counted MB", "measured / counted"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["base"], f"{r['examples']} x {r['tokens']}", f"{r['peak_growth_mb']:,.1f}",
                      f"{r['counted_mb']:,.1f}", f"{r['ratio']:.2f}")
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"kappa": sizing.KAPPA, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
