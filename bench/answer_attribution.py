"""Per-answer attribution through the serving engine: what asking for ``attribution`` adds to a request.

Run from the repository root: ``.venv/bin/python -m bench.answer_attribution [--contributions 1000]``.

A synthetic datanet (10 contributions per contributor, half on topic) is trained (tiny GPT-2, LoRA, 3
checkpoints) and attributed with TracIn, which writes the adapter's gradient store; then the engine that
``payable serve`` runs (``Engine.prepare`` + ``Engine.stream``, in process: HTTP and JSON are the same with
or without attribution) answers the datanet's eval prompts one at a time, greedy, with and without
``attribution`` (k = 10), interleaved. Reports request latency p50/p99 each way and the difference, which
is the answer's gradient pass plus the store search (``serving.influence``). Torch runs one thread.
Prints a table, writes ``bench/out/answer_attribution.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.synthetic import make_datanet
from pipelines.training import train_latest
from pipelines.training.arguments import TrainingArguments
from serving.adapter_source import AdapterSource
from serving.cache import AdapterCache
from serving.engine import Engine, GenerateRequest, ServedBase
from serving.influence import AnswerAttributor
from tests.attribution_fixtures import settings_in, write_evals, write_version
from tests.serving_fixtures import RecordingUsage

OUT = Path(__file__).parent / "out"
TRAIN = TrainingArguments(epochs=1, batch_size=8, max_length=64, num_checkpoints=3)
console = Console()


async def _answer(engine: Engine, prompt: str, k: int | None, tokens: int, i: int) -> float:
    started = time.perf_counter()
    prepared = await engine.prepare(GenerateRequest(request_id=f"bench-{i}-{k}", model="dn-1", prompt=prompt,
                                                    max_tokens=tokens, temperature=0.0, attribution_k=k))
    async for _ in engine.stream(prepared):
        pass
    return time.perf_counter() - started


def _percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contributions", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100, help="each way")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens per request")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_in(Path(tmp))
        per = 10
        dn = make_datanet(seed=1, contributors={"on_topic": args.contributions // (2 * per),
                                                "off_topic": args.contributions // (2 * per)},
                          per_contributor=per, num_queries=32)
        write_version(settings, 1, dn.table)
        write_evals(settings, 1, dn.eval_texts)
        started = time.perf_counter()
        record = train_latest(settings, 1, TRAIN, show_progress=False).record
        attribute(settings, 1, record.adapter_id, replace(ScoreArguments(method="tracin"),
                                                          harm=replace(ScoreArguments().harm, refit=False)))
        prepare_s = time.perf_counter() - started
        engine = Engine(ServedBase.tiny(), AdapterSource(settings.adapters_dir), AdapterCache(8, 1 << 30),
                        RecordingUsage(), AnswerAttributor(settings))
        engine.start()
        try:
            prompts = [" ".join(t.split()[:8]) for t in dn.eval_texts]

            async def run() -> tuple[list[float], list[float]]:
                plain, attributed = [], []
                await _answer(engine, prompts[0], 10, args.tokens, -1)  # loads the adapter and the attributor
                for i in range(args.requests):
                    prompt = prompts[i % len(prompts)]
                    plain.append(await _answer(engine, prompt, None, args.tokens, i))
                    attributed.append(await _answer(engine, prompt, 10, args.tokens, i))
                return plain, attributed

            plain, attributed = asyncio.run(run())
        finally:
            engine.stop()
    result = {"contributions": dn.table.num_rows, "completion_tokens": args.tokens, "k": 10,
              "train_and_attribute_s": prepare_s, "plain": _percentiles(plain),
              "with_attribution": _percentiles(attributed),
              "overhead_p50_ms": float(np.percentile((np.array(attributed) - np.array(plain)) * 1e3, 50))}
    table = Table(title=f"per-answer attribution, {result['contributions']:,} stored contributions, tiny GPT-2")
    for column in ("request", "p50 ms", "p99 ms"):
        table.add_column(column)
    for name in ("plain", "with_attribution"):
        table.add_row(name, f"{result[name]['p50_ms']:.1f}", f"{result[name]['p99_ms']:.1f}")
    console.print(table)
    console.print(f"attribution adds {result['overhead_p50_ms']:.1f} ms per request at p50 "
                  f"(train + attribute first: {prepare_s:.0f} s)")
    OUT.mkdir(exist_ok=True)
    (OUT / "answer_attribution.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
