"""The counterfactual check behind every harm slash: does the model really get better without them?

An influence score predicts what removing a contribution would do to the eval loss; the check does it.
The adapter is refitted without the flagged contributions, with the same seed and hyperparameters, and the
eval loss compared with the full-data fit at that seed: ``delta = full - refit`` (> 0: removing them helped).
The same full-data fit repeated with other seeds measures how much the eval loss moves on its own
(``spread``: max - min over the seeds). The reward split slashes only when ``delta`` beats ``spread``; a
delta inside the seed-to-seed noise proves nothing, and the stake is kept.

The flagged contributions are removed together (one refit, however many are flagged): their joint effect is
what one training run can resolve above the noise; each is confirmed by the group it was flagged with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import load_model, load_tokenizer
from pipelines.training.data import Examples, tokenize
from pipelines.training.lora import TrainResult, per_owner_losses, train_lora


@dataclass(frozen=True)
class Refit:
    """The counterfactual fit's outcome for one attribution run."""

    removed: tuple[int, ...]
    """Contribution ids left out of the refit."""
    full_losses: dict[int, float]
    """Eval loss of the full-data fit per seed (the adapter's own seed first)."""
    refit_loss: float
    seconds: float
    """Wall time of the fits this check ran (the cost of confirming)."""

    @property
    def delta(self) -> float:
        """Eval-loss improvement from leaving the flagged contributions out, at the adapter's seed."""
        return next(iter(self.full_losses.values())) - self.refit_loss

    @property
    def spread(self) -> float:
        """Seed-to-seed range of the full-data eval loss."""
        return max(self.full_losses.values()) - min(self.full_losses.values())


def _fit(train_texts: list[str], query_texts: list[str], args: TrainingArguments) -> tuple[TrainResult, Examples]:
    """A LoRA adapter fitted to ``train_texts`` with ``args`` as the registry's fit does, and the tokenized
    queries it was evaluated on."""
    tokenizer = load_tokenizer(args.base)
    train = tokenize(train_texts, tokenizer, args.max_length)
    queries = tokenize(query_texts, tokenizer, args.max_length)
    model = load_model(args.base, args.quantization)
    return train_lora(model, train, queries, args, show_progress=False), queries


def eval_loss(train_texts: list[str], query_texts: list[str], args: TrainingArguments) -> float:
    """Eval loss of a LoRA adapter fitted to ``train_texts`` with ``args`` (what the registry's fit measures)."""
    return _fit(train_texts, query_texts, args)[0].metrics["eval_loss"]


def query_losses(train_texts: list[str], query_texts: list[str], args: TrainingArguments) -> np.ndarray:
    """Loss of each query (shape (queries,)) under a LoRA adapter fitted to ``train_texts`` with ``args``: a
    query cut into several examples sums their losses, as attribution sums their scores (the LDS target)."""
    result, queries = _fit(train_texts, query_texts, args)
    return per_owner_losses(result.model, queries, len(query_texts))


def refit_without(train_rows: pa.Table, query_texts: list[str], removed: list[int], args: TrainingArguments,
                  spread_seeds: tuple[int, ...], known: dict[int, float] | None = None) -> Refit:
    """Refits without contributions ``removed`` (ids in ``train_rows``) and measures the seed spread.

    ``known`` holds full-data eval losses already measured on these rows and queries, by seed (the registered
    adapter's own metric comes from the identical deterministic fit); only the missing seeds are fitted."""
    started = time.perf_counter()
    texts = train_rows["text"].to_pylist()
    known = known or {}
    full = {seed: known[seed] if seed in known else eval_loss(texts, query_texts, replace(args, seed=seed))
            for seed in dict.fromkeys((args.seed, *spread_seeds))}
    kept = train_rows.filter(pc.invert(pc.is_in(train_rows["contribution_id"], pa.array(removed, pa.int64()))))
    refit = eval_loss(kept["text"].to_pylist(), query_texts, args)
    return Refit(removed=tuple(sorted(removed)), full_losses=full, refit_loss=refit,
                 seconds=time.perf_counter() - started)
