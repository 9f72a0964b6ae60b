"""Penalty bench: honest stakes slashed (goal 0) and recall of planted harmful contributions (goal >= 0.9).

Run from the repository root: ``.venv/bin/python -m bench.penalties``. Two datanets built in code
(``pipelines.attribution.synthetic``, nothing downloaded), one contributor per contribution:
- prose: 100 honest cooking notes + 4 each of shuffled words, another domain (sports) and random tokens;
- JSONL: 100 honest one-record contributions + 4 label-flipped ones of 4 records each.
Each is trained (tiny GPT-2 + LoRA, the default TrainingArguments), scored by the real ``attribute`` (TracIn,
harm tests, counterfactual refit when something is flagged) and split by the real ``split_rewards`` with
every contribution accepted, so "slashed" is what the mechanism would request. Also reported: what today's
old rule (score < -0.1 median |score|) would have flagged, and an oracle refit without every planted
contribution (how much the planted harm moves the eval loss against the seed-to-seed spread, and its cost).
Prints a table and writes ``bench/out/penalties.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console
from rich.table import Table

from pipelines.attribution import ScoreArguments, attribute
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


def run(name: str, datanet_id: int, dn: PlantedDatanet, train_args: TrainingArguments) -> dict:
    settings = settings_in(Path(tempfile.mkdtemp(prefix=f"penalties-{name}-")))
    write_version(settings, datanet_id, dn.table)
    write_evals(settings, datanet_id, dn.eval_texts)
    started = time.perf_counter()
    record = train_latest(settings, datanet_id, train_args, show_progress=False).record
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    result = attribute(settings, datanet_id, record.adapter_id, ScoreArguments(method="tracin"))
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
        "train_s": train_s, "attribute_s": attribute_s,
    }


def main() -> None:
    args = TrainingArguments()
    results = [run("prose", 1, prose_datanet(), args), run("jsonl", 2, labelled_datanet(lines=1, harm_lines=4), args)]
    table = Table(title="Penalties: honest stakes slashed and planted harm caught (TracIn + refit)")
    for column in ("datanet", "honest", "planted", "honest slashed", "honest flagged", "old rule: honest flagged",
                   "planted flagged", "recall", "refit delta / spread (oracle)", "counterfactual s", "oracle refit s"):
        table.add_column(column)
    for r in results:
        table.add_row(r["datanet"], str(r["honest"]), str(r["planted"]), str(r["honest_slashed"]),
                      str(r["honest_flagged"]), str(r["old_rule_honest_flagged"]), str(r["planted_flagged"]),
                      f"{r['recall']:.2f}", f"{r['oracle_refit_delta']:+.4f} / {r['oracle_refit_spread']:.4f}",
                      f"{r['counterfactual_s']:.1f}", f"{r['oracle_refit_s']:.1f}")
    Console(width=200).print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "penalties.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
