"""Can Proof of Attribution scale? Attribution cost against N, and per-answer search latency against store size.

Run from the repository root: ``.venv/bin/python -m bench.scale`` (``--part cost --sizes 100000`` for the 100k
point alone: a cost run merges its sizes with the other sizes already in ``scale.json`` and refits the line,
a latency run its store sizes; ``--quick`` for a smoke run). Three parts:

- **Cost against N**: one tiny-GPT-2 LoRA adapter trained a few steps, then attribution's own code path
  (``tracin_by_contribution``: gradients, per-contribution features, TracIn scores; then ``write_store``) over
  synthetic datanets of N contributions against 16 eval queries: wall and CPU seconds, per-contribution
  gradient time, tokens, store bytes per contribution. A least-squares line through the points (with its R^2)
  is extrapolated to 1M contributions and to 1B training tokens (cost per million tokens). ``--base smollm2``
  runs the same on SmolLM2-135M-Instruct (kept apart in ``scale.json``, under ``smollm2``), with the peak
  resident memory of the attribution pass.
- **Workers** (``--part workers``): the Beam attribution pipeline (``score_examples_beam``) over N of the same
  contributions on the Dask runner with 1, then 2 worker processes, beside the in-process ``score_examples``:
  wall and CPU seconds of the process tree, the speedup over one worker, the largest score difference from the
  in-process run, and each worker's busy seconds from the scheduler's task stream (where a run loses time).
- **Per-answer latency**: synthetic gradient-like features (``gradient_like``: the real store's power-law
  spectrum and log-normal norms) in a real Lance store at 10k and 100k rows of the real width (4,608) and 1M
  rows of the serving width (256: 1M real-width rows are 18 GB); top-10 by exact scan and by the store's
  search (serving projection, IVF_PQ, exact re-rank), p50/p99 over the queries, recall@10 against numpy's
  exact top-10 on the full features. Plus the end-to-end answer path on the real 10k store
  (answer gradient at every checkpoint + search).

Prints the figures and writes ``bench/out/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lance
import numpy as np
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from rich.console import Console

from bench.runner import beam_runner, cpu_seconds, load_average, task_stream, warm_attribution
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.beam import score_examples_beam
from pipelines.attribution.gradients import projected_gradients
from pipelines.attribution.methods import Moments, precondition
from pipelines.attribution.scoring import score_examples, setup, tracin_by_contribution
from pipelines.attribution.sizing import sized
from pipelines.attribution.store import (
    GradientStore,
    StoreSpec,
    build_index,
    default_nprobes,
    store_bytes,
    write_store,
)
from pipelines.attribution.synthetic import make_datanet
from pipelines.attribution.synthetic_features import gradient_like
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training.arguments import BaseModelSpec, TrainingArguments
from pipelines.training.base_model import SMOLLM2, load_model, load_tokenizer
from pipelines.training.data import Examples, tokenize
from pipelines.training.lora import deterministic, train_lora

OUT = Path(__file__).parent / "out"
console = Console(width=200)  # whole lines in a log file
TRAIN = TrainingArguments(epochs=1, batch_size=8, max_length=64, num_checkpoints=3)
BASES = {"tiny": (TRAIN, 400), "smollm2": (replace(TRAIN, base=BaseModelSpec(name=SMOLLM2), learning_rate=2e-3,
                                                  num_checkpoints=2), 80)}
"""Per ``--base``: the training arguments and how many contributions the adapter is trained on (SmolLM2's
steps take seconds each: a few suffice, attribution cost does not depend on the fit). SmolLM2 keeps 2
checkpoints, as ``bench.attribution --real`` does."""
SCORE = ScoreArguments(method="tracin")  # attribution's defaults: projection_dim 256 per layer
CHUNK = 5_000
"""Contributions per ``score_examples`` call: one progress line each, and only one chunk's example gradients in
memory (the 16 query gradients are recomputed per chunk: under 1% of its cost)."""
LOGRA_GAIN = 6500  # LoGra (Choe et al. 2024): throughput over EK-FAC-class influence on Llama3-8B


def datanet(n: int, seed: int):
    """N synthetic contributions (10 per contributor, half on topic) and 16 eval queries."""
    per = 10
    contributors = max(1, n // per)
    return make_datanet(seed=seed, contributors={"on_topic": contributors // 2, "off_topic": contributors
                                                 - contributors // 2}, per_contributor=per, num_queries=16)


def trained_adapter(base: str = "tiny"):
    """A few LoRA steps on a small datanet (``BASES``): attribution cost does not depend on how well it fits."""
    args, n = BASES[base]
    tokenizer = load_tokenizer(args.base)
    dn = datanet(n, seed=1)
    train = tokenize(dn.table["text"].to_pylist(), tokenizer, args.max_length)
    queries = tokenize(dn.eval_texts, tokenizer, args.max_length)
    result = train_lora(load_model(args.base), train, queries, args, show_progress=False)
    return LoRALanguageModelTask(result.model), result.checkpoints, tokenizer


def reset_peak_rss() -> None:
    """Restarts the kernel's peak-resident count (``VmHWM``) of this process, so that ``peak_rss_mb`` measures
    what follows and not the model loading and training before it."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def attribution_cost(n: int, task, checkpoints, tokenizer, work: Path) -> dict:
    """Attribution's path on N contributions: gradients, TracIn scores, the store write (index when large)."""
    dn = datanet(n, seed=2)
    examples = tokenize(dn.table["text"].to_pylist(), tokenizer, TRAIN.max_length)
    queries = tokenize(dn.eval_texts, tokenizer, TRAIN.max_length)
    states, lrs = [c.state for c in checkpoints], [c.learning_rate for c in checkpoints]
    owner = examples.owner.numpy()
    reset_peak_rss()
    features: np.ndarray | None = None  # filled chunk by chunk: a concatenation would hold them twice (3.7 GB)
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, dn.table.num_rows, CHUNK):
        chunk = torch.from_numpy((owner >= start) & (owner < start + CHUNK))
        rows = min(CHUNK, dn.table.num_rows - start)
        part = Examples(examples.input_ids[chunk], examples.attention_mask[chunk], examples.owner[chunk] - start)
        _, part_features = tracin_by_contribution(task, states, lrs, part, rows, queries.batch(slice(None)), SCORE)
        if features is None:
            features = np.empty((dn.table.num_rows, part_features.shape[1]), dtype=np.float32)
        features[start:start + rows] = part_features
        done = start + rows
        spent = time.process_time() - cpu
        console.print(f"  {done:,}/{dn.table.num_rows:,} contributions: {spent:.0f} s CPU, "
                      f"{time.perf_counter() - wall:.0f} s wall, {1e3 * spent / done:.2f} ms CPU/contribution, "
                      f"load {os.getloadavg()[0]:.1f}")
    grad_wall, grad_cpu = time.perf_counter() - wall, time.process_time() - cpu
    spec = StoreSpec("ad-bench", "bench", SCORE.projection_dim, SCORE.seed, lrs, features.shape[1] // len(lrs), 1.0)
    uri = str(work / f"store-{n}.lance")
    store_wall, store_cpu = time.perf_counter(), time.process_time()
    write_store(uri, spec, dn.table["contribution_id"].to_numpy(), dn.table["content_hash"].to_pylist(),
                np.ones(dn.table.num_rows, dtype=bool), features)
    store_wall, store_cpu = time.perf_counter() - store_wall, time.process_time() - store_cpu
    total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = int(examples.attention_mask.sum())
    size = store_bytes(uri)
    row = {"contributions": dn.table.num_rows, "examples": len(examples), "tokens": tokens,
           "checkpoints": len(states), "store_dim": spec.dim, "wall_s": total_wall, "cpu_s": total_cpu,
           "gradient_wall_s": grad_wall, "gradient_cpu_s": grad_cpu,
           "store_write_and_index_wall_s": store_wall, "store_write_and_index_cpu_s": store_cpu,
           "gradient_ms_per_contribution": 1e3 * grad_wall / dn.table.num_rows,
           "gradient_cpu_ms_per_contribution": 1e3 * grad_cpu / dn.table.num_rows,
           "store_bytes": size, "store_bytes_per_contribution": size / dn.table.num_rows, "store_uri": uri,
           "peak_rss_mb": peak_rss_mb(), "load_average": os.getloadavg()}
    console.print(f"N={row['contributions']:>7,}: {total_wall:7.1f} s wall, {total_cpu:7.1f} s CPU (store write "
                  f"and index {store_cpu:.1f} s CPU), {row['gradient_cpu_ms_per_contribution']:.2f} ms gradient "
                  f"CPU/contribution, {row['store_bytes_per_contribution']:,.0f} B/contribution, {tokens:,} tokens, "
                  f"peak RSS {row['peak_rss_mb']:,.0f} MB, load {row['load_average'][0]:.1f}")
    return row


def fitted(rows: list[dict], key: str) -> dict:
    """Least-squares line ``key = a + b * N`` and what it predicts at 1M contributions and per 1M tokens."""
    n = np.array([r["contributions"] for r in rows], dtype=float)
    y = np.array([r[key] for r in rows], dtype=float)
    b, a = np.polyfit(n, y, 1) if len(rows) > 1 else (y[0] / n[0], 0.0)
    residual = y - (a + b * n)
    r2 = float(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean()))) if len(rows) > 2 else float("nan")
    tokens_per = float(np.sum([r["tokens"] for r in rows]) / n.sum())
    exponent = float(np.polyfit(np.log(n), np.log(y), 1)[0]) if len(rows) > 1 else float("nan")
    return {"intercept_s": float(a), "s_per_contribution": float(b), "r2": r2, "loglog_exponent": exponent,
            "points": len(rows),
            "at_1m_contributions_s": float(a + b * 1e6), "s_per_million_tokens": float(b / tokens_per * 1e6),
            "at_1b_tokens_s": float(b / tokens_per * 1e9), "tokens_per_contribution": tokens_per}


def percentiles(times: list[float], cpu: list[float] | None = None) -> dict:
    """Wall p50/p99, and (``cpu``) the same of each query's CPU seconds: on a shared, overloaded machine the
    wall p99 is mostly time spent waiting for a core, which CPU time leaves out."""
    ms = 1e3 * np.asarray(times)
    out = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
           "mean_ms": float(ms.mean()), "queries": len(times)}
    if cpu is not None:
        c = 1e3 * np.asarray(cpu)
        out |= {"cpu_p50_ms": float(np.percentile(c, 50)), "cpu_p99_ms": float(np.percentile(c, 99))}
    return out


def timed(search, queries: np.ndarray) -> tuple[list, list[float], list[float]]:
    """Runs ``search`` on each query: results, wall seconds, CPU seconds (all threads of this process)."""
    results, wall, cpu = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        results.append(search(q))
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return results, wall, cpu


def latency(n: int, dim: int, num_queries: int, exact_queries: int, ann: list[tuple[int, int]],
            work: Path) -> dict:
    """Top-10 latency and recall on a synthetic store of ``n`` rows ``dim`` wide (``gradient_like``: the real
    store's spectrum and norms), indexed regardless of EXACT_BELOW. Recall is against numpy's exact top-10 on
    the full features, so at real width it counts what the serving projection loses too."""
    feats = gradient_like(n, dim, seed=n)
    spec = StoreSpec("ad-synthetic", "synthetic", 0, 0, [1.0], dim, 1.0)
    uri = str(work / f"synthetic-{n}x{dim}.lance")
    t = time.perf_counter()
    if not (Path(uri).exists() and len(GradientStore(uri)) == n and GradientStore(uri).indexed):  # else: reuse
        write_store(uri, spec, np.arange(n), [""] * n, np.ones(n, dtype=bool), feats)
        if not GradientStore(uri).indexed:
            build_index(lance.dataset(uri))
    build_s = time.perf_counter() - t
    store = GradientStore(uri)
    queries = gradient_like(num_queries, dim, seed=7)
    truth = []
    for i in range(0, num_queries, 50):  # a block of queries per pass over the rows
        scores = feats @ queries[i:i + 50].T
        truth += [set(np.argpartition(-scores[:, j], 10)[:10].tolist()) for j in range(scores.shape[1])]
    del feats, scores
    row: dict = {"stored": n, "dim": dim, "search_column": store.spec.search_column,
                 "search_width": store.spec.search_width, "write_and_index_s": build_s,
                 "store_bytes_per_contribution": store_bytes(uri) / n, "load_average": os.getloadavg()}
    store.search(queries[0], 10, exact=True)  # warm the page cache
    found, wall, cpu = timed(lambda q: store.search(q, 10, exact=True), queries[:exact_queries])
    row["exact"] = percentiles(wall, cpu) | {"recall_at_10": float(np.mean(
        [len({h.contribution_id for h in f} & s) / 10 for f, s in zip(found, truth, strict=False)]))}
    row["ann"] = []
    for probes, refine in [(default_nprobes(n), 8), *ann]:  # first: what serving searches with
        store.search(queries[0], 10, nprobes=probes, refine_factor=refine)
        found, wall, cpu = timed(lambda q, p=probes, r=refine: store.search(q, 10, nprobes=p, refine_factor=r),
                                 queries)
        recall = [len({h.contribution_id for h in f} & s) / 10 for f, s in zip(found, truth, strict=True)]
        row["ann"].append({"nprobes": probes, "refine_factor": refine, "recall_at_10": float(np.mean(recall))}
                          | percentiles(wall, cpu))
    console.print(f"stored={n:>9,} dim={dim} (searched {store.spec.search_width} wide), load "
                  f"{os.getloadavg()[0]:.1f}: exact p50 {row['exact']['p50_ms']:.1f} / p99 "
                  f"{row['exact']['p99_ms']:.1f} ms (CPU p99 {row['exact']['cpu_p99_ms']:.1f}); " + "; ".join(
                      f"ANN {a['nprobes']}x{a['refine_factor']} p50 {a['p50_ms']:.1f} / p99 {a['p99_ms']:.1f} ms "
                      f"(CPU p99 {a['cpu_p99_ms']:.1f}) recall "
                      f"{a['recall_at_10']:.3f}" for a in row["ann"]) + f"; write+index {build_s:.0f} s")
    return row


def answer_latency(task, checkpoints, tokenizer, store_uri: str, num_queries: int) -> dict:
    """End to end on the real store: an answer's projected, lr-weighted gradient, then its top-10."""
    states, lrs = [c.state for c in checkpoints], [c.learning_rate for c in checkpoints]
    store = GradientStore(store_uri)
    with torch.no_grad():
        prepared = setup(task, states, lrs, replace(SCORE, projection_dim=store.spec.projection_dim))
    answers = datanet(num_queries * 10, seed=3).eval_texts[:num_queries]
    grad_times, search_times, recall = [], [], []
    cpu = time.process_time()
    for text in answers:
        t = time.perf_counter()
        ex = tokenize([text], tokenizer, TRAIN.max_length)
        with deterministic(1), torch.no_grad():
            g = projected_gradients(task, prepared.params, ex.batch(slice(None)), prepared.projector, query=True)
        q = precondition(g.sum(0, keepdims=True).astype(np.float64), Moments(), SCORE, prepared.slices,
                         prepared.learning_rates).reshape(-1)
        grad_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        hits = store.search(q, 10)
        search_times.append(time.perf_counter() - t)
        exact = store.search(q, 10, exact=True)
        recall.append(len({h.contribution_id for h in hits} & {h.contribution_id for h in exact}) / 10)
    row = {"stored": len(store), "dim": store.spec.dim, "indexed": store.indexed,
           "cpu_ms_per_answer_incl_exact_check": 1e3 * (time.process_time() - cpu) / len(answers),
           "recall_at_10_vs_exact": float(np.mean(recall)),
           "answer_gradient": percentiles(grad_times), "search": percentiles(search_times)}
    console.print(f"answer path on the real {len(store):,}-row store (dim {store.spec.dim}): gradient p50 "
                  f"{row['answer_gradient']['p50_ms']:.1f} ms, search p50 {row['search']['p50_ms']:.1f} / p99 "
                  f"{row['search']['p99_ms']:.1f} ms, recall@10 vs exact {row['recall_at_10_vs_exact']:.2f} "
                  f"(indexed: {store.indexed})")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="contributions per attribution run")
    parser.add_argument("--stored", default="10000,100000,1000000:256",
                        help="synthetic store sizes, each N or N:width (1M x 4,608 floats is 18 GB: too much here)")
    parser.add_argument("--dim", type=int, default=4608, help="synthetic feature width (the real store's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=30)
    parser.add_argument("--ann", default="16x8,32x8,64x8", help="nprobes x refine_factor settings")
    parser.add_argument("--work", default="/tmp/payable-bench-scale")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200/500 contributions, 10k stored, 300 on workers")
    parser.add_argument("--part", choices=["all", "cost", "latency", "workers"], default="all",
                        help="run one part (they can run side by side; each merges its keys into scale.json)")
    parser.add_argument("--base", choices=sorted(BASES), default="tiny", help="the cost part's base model")
    parser.add_argument("--answers", type=int, default=50, help="answers attributed after the cost part")
    parser.add_argument("--contributions", type=int, default=5000, help="the workers part's contributions")
    parser.add_argument("--workers", default="1,2", help="the workers part's cluster sizes, in order")
    a = parser.parse_args()
    if a.quick:
        a.sizes, a.stored, a.queries, a.exact_queries, a.contributions = "200,500", "10000", 20, 10, 300
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    out: dict = {f"machine_{a.part}": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}
    path = OUT / "scale.json"
    earlier = lambda: json.loads(path.read_text()) if path.exists() and a.part != "all" else {}  # noqa: E731
    if a.part in ("all", "cost") and a.base == "tiny":
        out |= cost_part([int(n) for n in a.sizes.split(",")], work, lambda: earlier().get("cost", []),
                         answers=a.answers)
    elif a.part in ("all", "cost"):
        out[a.base] = cost_part([int(n) for n in a.sizes.split(",")], work,
                                lambda: earlier().get(a.base, {}).get("cost", []), a.base, a.answers)
    if a.part in ("all", "workers"):
        out["workers"] = workers_part(a.contributions, [int(w) for w in a.workers.split(",")])
    if a.part in ("all", "latency"):
        ann = [tuple(int(v) for v in pair.split("x")) for pair in a.ann.split(",")]
        sizes = [(int(n), int(w or a.dim)) for n, _, w in (s.partition(":") for s in a.stored.split(","))]
        measured = [latency(n, dim, a.queries, a.exact_queries, ann, work) for n, dim in sizes]
        kept = [r for r in earlier().get("latency", []) if (r["stored"], r["dim"]) not in set(sizes)]
        out["latency"] = sorted(kept + measured, key=lambda r: (r["stored"], -r["dim"]))
    OUT.mkdir(exist_ok=True)
    merged = earlier()  # read at the end: a cost run of another size may have finished meanwhile
    path.write_text(json.dumps(merged | out | {"logra_published_gain_over_ekfac": LOGRA_GAIN}, indent=1))
    console.print(f"wrote {path}")


def cost_part(sizes: list[int], work: Path, earlier: Callable[[], list[dict]], base: str = "tiny",
              answers: int = 50) -> dict:
    """Runs ``sizes`` and fits the line through them and the ``earlier`` rows of other sizes, read once these
    are measured (the adapter is deterministic, so a 100k run started apart from the 1k and 10k runs measures
    the same adapter); then ``answers`` answers' attribution against the last size's store."""
    out: dict = {"base": base, "train": BASES[base][0].to_dict(), "score": SCORE.to_dict()}
    t = time.perf_counter()
    task, checkpoints, tokenizer = trained_adapter(base)
    out["train_s"] = time.perf_counter() - t
    measured = [attribution_cost(n, task, checkpoints, tokenizer, work) for n in sizes]
    kept = [r for r in earlier() if r["contributions"] not in {m["contributions"] for m in measured}]
    out["cost"] = sorted(kept + measured, key=lambda r: r["contributions"])
    out["fit_wall"], out["fit_cpu"] = fitted(out["cost"], "wall_s"), fitted(out["cost"], "cpu_s")
    out["fit_gradient_cpu"] = fitted(out["cost"], "gradient_cpu_s")
    out["fit_store_cpu"] = fitted(out["cost"], "store_write_and_index_cpu_s")
    fit = out["fit_cpu"]
    console.print(f"fit (CPU) over {fit['points']} sizes: {fit['s_per_contribution'] * 1e3:.2f} ms/contribution + "
                  f"{fit['intercept_s']:.1f} s, R^2 {fit['r2']:.4f} (log-log slope "
                  f"{fit['loglog_exponent']:.2f}); 1M contributions ~ {fit['at_1m_contributions_s'] / 3600:.1f} "
                  f"CPU-h; {fit['s_per_million_tokens']:.0f} CPU-s per 1M tokens; 1B tokens ~ "
                  f"{fit['at_1b_tokens_s'] / 3600:.0f} CPU-h")
    out["answer_path"] = answer_latency(task, checkpoints, tokenizer, measured[-1]["store_uri"], answers)
    return out


def workers_part(n: int, counts: list[int]) -> dict:
    """The Beam attribution pipeline over ``n`` contributions (TracIn per example, the cost part's adapter and
    datanet) on a Dask cluster of each of ``counts`` workers, and in process for reference."""
    task, checkpoints, tokenizer = trained_adapter()
    dn = datanet(n, seed=2)
    train = tokenize(dn.table["text"].to_pylist(), tokenizer, TRAIN.max_length)
    queries = tokenize(dn.eval_texts, tokenizer, TRAIN.max_length)
    states, lrs = [c.state for c in checkpoints], [c.learning_rate for c in checkpoints]
    args = sized(SCORE, task, train.batch(slice(0, 1)))
    out: dict = {"contributions": dn.table.num_rows, "examples": len(train), "queries": len(queries),
                 "gradient_batches": -(-len(train) // args.batch_size), "checkpoints": len(states)}
    load, cpu, wall = load_average(), cpu_seconds(), time.perf_counter()
    expected = score_examples(task, states, lrs, train.batch(slice(None)), queries.batch(slice(None)), args)
    out["in_process"] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu, "load_average": load}
    console.print(f"in process: {out['in_process']['wall_s']:.1f} s wall, {out['in_process']['cpu_s']:.1f} s CPU, "
                  f"load {load[0]:.2f}")
    out["dask"] = []
    for workers in counts:
        with beam_runner("dask", workers, warm_up=warm_attribution) as options, task_stream(options) as tasks:
            load, cpu, wall = load_average(), cpu_seconds(), time.perf_counter()
            scores = score_examples_beam(task, states, lrs, train, queries, args, PipelineOptions(options))
            row = {"workers": workers, "wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu,
                   "load_average": load, "load_average_after": load_average(),
                   "max_abs_diff_vs_in_process": float(np.abs(scores - np.asarray(expected)).max()),
                   "tasks": tasks()}
        row["speedup_over_1_worker"] = out["dask"][0]["wall_s"] / row["wall_s"] if out["dask"] else 1.0
        out["dask"].append(row)
        busy = ", ".join(f"{w} {v['compute_s']:.1f} s busy" for w, v in row["tasks"]["workers"].items())
        console.print(f"{workers} worker(s): {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, speedup "
                      f"{row['speedup_over_1_worker']:.2f}x, max abs diff {row['max_abs_diff_vs_in_process']:.1e}, "
                      f"load {load[0]:.2f} -> {row['load_average_after'][0]:.2f}; {busy}")
    return out

if __name__ == "__main__":
    main()
