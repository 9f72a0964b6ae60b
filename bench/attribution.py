"""Attribution bench: LDS (Spearman over retrained 50% subsets), corrupted-contribution AUC and wall seconds.

Run from the repository root: ``.venv/bin/python -m bench.attribution [--quick]``. Settings, all offline:
- digits (scikit-learn's bundled data): logistic regression and a small MLP; payable's methods against
  dattri 0.3.0's TRAK, TracIn and explicit influence functions on the same models and subsets;
- text: the tiny GPT-2 with LoRA on a synthetic multi-contributor datanet (payable's methods only).
Every score is read as "positive = training on it lowers the query's loss" and correlated with minus the
retrained models' query loss. Prints a rich table and writes ``bench/out/attribution.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.func import functional_call

from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.synthetic import make_datanet
from pipelines.attribution.task import LoRALanguageModelTask, Params, Task
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import build_base_model, build_tokenizer
from pipelines.training.data import tokenize
from pipelines.training.lora import mean_loss, train_lora

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


def lds(scores: np.ndarray, subsets: np.ndarray, losses: np.ndarray) -> float:
    """Mean over queries of Spearman(sum of subset scores, minus the retrained loss)."""
    predicted = subsets.astype(np.float64) @ scores  # (subsets, queries)
    corr = [spearmanr(predicted[:, j], -losses[:, j]).statistic for j in range(scores.shape[1])]
    return float(np.nanmean(corr))


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    if isinstance(out, torch.Tensor):
        out = out.detach().numpy()
    return np.asarray(out, dtype=np.float64), seconds


def dattri_scores(model: nn.Module, snaps: list[Params], x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor,
                  yq: torch.Tensor) -> dict[str, tuple[np.ndarray, float]]:
    from dattri.algorithm import IFAttributorExplicit, TracInAttributor, TRAKAttributor
    from dattri.task import AttributionTask

    def loss(params, data):
        xb, yb = data
        return nn.functional.cross_entropy(functional_call(model, params, (xb,)), yb)

    def prob(params, data):
        xb, yb = data
        return torch.exp(-nn.functional.cross_entropy(functional_call(model, params, (xb[None],)), yb[None]))

    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    test = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xq, yq), batch_size=64)
    out = {}
    task = AttributionTask(loss_func=loss, model=model, checkpoints=snaps)
    tracin = TracInAttributor(task=task, weight_list=torch.ones(len(snaps)), normalized_grad=False,
                              projector_kwargs={"proj_dim": 512, "device": "cpu"})
    out["dattri TracIn"] = timed(lambda: tracin.attribute(train, test))
    final = AttributionTask(loss_func=loss, model=model, checkpoints=snaps[-1])

    def run_if():
        attributor = IFAttributorExplicit(task=final, regularization=1e-2)
        attributor.cache(train)
        return attributor.attribute(train, test)

    out["dattri IF (explicit)"] = timed(run_if)

    def run_trak():
        attributor = TRAKAttributor(task=AttributionTask(loss_func=loss, model=model, checkpoints=snaps),
                                    correct_probability_func=prob, projector_kwargs={"proj_dim": 512, "device": "cpu"})
        attributor.cache(train)
        return attributor.attribute(test)

    out["dattri TRAK"] = timed(run_trak)
    return out


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
    task = ClassifierTask(model)
    lrs = [1.0] * len(snaps)
    results: dict[str, tuple[np.ndarray, float]] = {}
    for method in ("datainf", "tracin", "trak"):
        args = ScoreArguments(method=method, projection_dim=512, batch_size=256, damping=0.01)
        results[f"payable {method}"] = timed(lambda a=args: score_examples(
            task, snaps, lrs, {"x": x, "y": y}, {"x": xq, "y": yq}, a))
    results.update(dattri_scores(model, snaps, x, y, xq, yq))
    rng = np.random.default_rng(0)
    num = 20 if quick else 60
    subsets = np.zeros((num, n), dtype=bool)
    losses = np.zeros((num, m))
    for s in range(num):
        subsets[s, rng.choice(n, n // 2, replace=False)] = True
        sub = torch.from_numpy(subsets[s])
        retrained, _ = fit(kind, x[sub], y[sub], seed=0, epochs=epochs)
        with torch.no_grad():
            losses[s] = nn.functional.cross_entropy(retrained(xq), yq, reduction="none").numpy()
    return [{"setting": f"digits-{kind}", "method": name, "lds": lds(sc, subsets, losses), "auc": None,
             "seconds": sec} for name, (sc, sec) in results.items()]


def text(quick: bool) -> list[dict]:
    dn = make_datanet(contributors={"on_topic": 6, "off_topic": 3, "corrupted": 3}, per_contributor=4, num_queries=16)
    args = TrainingArguments()
    tok = build_tokenizer(args.base.vocab_size)
    texts = dn.table["text"].to_pylist()
    train = tokenize(texts, tok, args.max_length)
    queries = tokenize(dn.eval_texts, tok, args.max_length)
    result = train_lora(build_base_model(args.base), train, queries, args, show_progress=False)
    task = LoRALanguageModelTask(result.model)
    states, lrs = [c.state for c in result.checkpoints], [c.learning_rate for c in result.checkpoints]
    owner = train.owner.numpy()
    n, m = len(texts), len(dn.eval_texts)
    corrupted = np.array([dn.kinds[c] == "corrupted" for c in dn.table["contributor"].to_pylist()])
    rows = {}
    for method in ("datainf", "tracin", "trak"):
        sc, sec = timed(lambda mt=method: score_examples(task, states, lrs, train.batch(slice(None)),
                                                         queries.batch(slice(None)), ScoreArguments(method=mt)))
        per_contribution = np.zeros((n, sc.shape[1]))
        np.add.at(per_contribution, owner, sc)
        rows[f"payable {method}"] = (per_contribution, sec)
    rng = np.random.default_rng(0)
    num = 20 if quick else 50
    subsets = np.zeros((num, n), dtype=bool)
    losses = np.zeros((num, m))
    for s in range(num):
        subsets[s, rng.choice(n, n // 2, replace=False)] = True
        kept = tokenize([t for t, keep in zip(texts, subsets[s], strict=True) if keep], tok, args.max_length)
        retrained = train_lora(build_base_model(args.base), kept, queries, args, show_progress=False).model
        for j in range(m):
            losses[s, j] = mean_loss(retrained, type(queries)(queries.input_ids[j:j + 1],
                                                              queries.attention_mask[j:j + 1], queries.owner[j:j + 1]))
    return [{"setting": "text-lora", "method": name, "lds": lds(sc, subsets, losses),
             "auc": float(roc_auc_score(corrupted, -sc.mean(1))), "seconds": sec} for name, (sc, sec) in rows.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and retrained subsets")
    quick = parser.parse_args().quick
    figures = digits("lr", quick) + digits("mlp", quick) + text(quick)
    table = Table(title="payable attribution bench" + (" (quick)" if quick else ""))
    for col in ("setting", "method", "LDS", "AUC", "seconds"):
        table.add_column(col)
    for f in figures:
        table.add_row(f["setting"], f["method"], f"{f['lds']:.3f}", "-" if f["auc"] is None else f"{f['auc']:.3f}",
                      f"{f['seconds']:.2f}")
    Console().print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "attribution.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
