"""How good is an influence run? Two figures anyone can check, published with the run's scores.

- **LDS** (linear datamodeling score, Park et al. 2023): draw random subsets of the training contributions,
  refit the adapter on each (the run's own training arguments, ``counterfactual.query_losses``) and measure
  every eval query's loss. Scores are additive predictions: a subset's predicted benefit on query j is the sum
  of its members' scores on j. LDS is the Spearman correlation, per query, between that prediction and minus
  the measured loss, averaged over queries: 1 = the scores rank retrained models perfectly, 0 = no better
  than chance. Its cost is one LoRA fit per subset (``QualityArguments.lds_subsets``).
- **Canary AUC**: the operator plants known-bad contributions whose ids are committed before the run
  (``canaries.py``); once revealed, the ROC AUC of the run's harm ranking (lowest score first) separating
  them from the rest says whether the method finds bad data: 1 = every canary ranked below every other
  contribution, 0.5 = chance. No matching reveal, no AUC: it is left unmeasured, never guessed.
The math here is pure (no model, no I/O); ``measure_lds`` runs the refits through ``counterfactual``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata, spearmanr

from pipelines.attribution.arguments import QualityArguments
from pipelines.attribution.counterfactual import query_losses
from pipelines.training.arguments import TrainingArguments

if TYPE_CHECKING:  # canaries imports this module to score a reveal
    from pipelines.attribution.canaries import DatanetCanaries


def random_subsets(n: int, num: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """``num`` seeded random subsets of ``n`` items, each of ``round(n * fraction)`` (at least 1): (num, n) bool."""
    rng = np.random.default_rng(seed)
    size = max(1, min(n, int(n * fraction)))
    subsets = np.zeros((num, n), dtype=bool)
    for s in range(num):
        subsets[s, rng.choice(n, size, replace=False)] = True
    return subsets


def retrained_losses(subsets: np.ndarray, retrain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Query losses (subsets, queries) of ``retrain(mask)`` for each subset mask, in order."""
    return np.stack([retrain(mask) for mask in subsets])


def lds(scores: np.ndarray, subsets: np.ndarray, losses: np.ndarray) -> float:
    """Mean over queries of Spearman(sum of the subset's scores, minus the retrained loss).

    ``scores`` is (items, queries) with NaN where an item is not scored on a query (a held-out contribution's
    own query): it then predicts nothing there. A query whose prediction or loss is constant over the subsets
    has no correlation and is skipped; NaN when no query has one."""
    predicted = subsets.astype(np.float64) @ np.nan_to_num(scores, nan=0.0)  # (subsets, queries)
    corr = [spearmanr(predicted[:, j], -losses[:, j]).statistic for j in range(scores.shape[1])
            if np.ptp(predicted[:, j]) > 0 and np.ptp(losses[:, j]) > 0]
    return float(np.mean(corr)) if corr else float("nan")


def canary_auc(scores: np.ndarray, canary: np.ndarray) -> float:
    """ROC AUC of ranking by harm (lowest score first) separating ``canary`` rows from the rest (ties count
    half, Mann-Whitney); NaN without at least one of each."""
    positives, negatives = int(canary.sum()), int((~canary).sum())
    if not positives or not negatives:
        return float("nan")
    harm_rank = rankdata(-np.asarray(scores, dtype=np.float64))
    return float((harm_rank[canary].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass(frozen=True)
class LdsMeasurement:
    """A run's LDS and what it cost; ``value`` is NaN when unmeasured (no subsets, or no query correlates)."""

    value: float
    subsets: int
    seconds: float


def measure_lds(train_rows: pa.Table, query_texts: list[str], per_query: np.ndarray, train_args: TrainingArguments,
                args: QualityArguments) -> LdsMeasurement:
    """The run's LDS: refits on ``args.lds_subsets`` random subsets of ``train_rows`` (with the adapter's own
    ``train_args``) against ``per_query``, the (train rows, queries) scores in the same row order."""
    if args.lds_subsets == 0 or train_rows.num_rows < 2:
        return LdsMeasurement(float("nan"), 0, 0.0)
    started = time.perf_counter()
    texts = train_rows["text"].to_pylist()
    subsets = random_subsets(len(texts), args.lds_subsets, args.subset_fraction, args.seed)

    def retrain(mask: np.ndarray) -> np.ndarray:
        return query_losses([t for t, keep in zip(texts, mask, strict=True) if keep], query_texts, train_args)

    losses = retrained_losses(subsets, retrain)
    return LdsMeasurement(lds(per_query, subsets, losses), args.lds_subsets, time.perf_counter() - started)


@dataclass(frozen=True)
class RunCanaries:
    """The canaries a run is judged by: the datanet's commitment in force when it was scored (None: none), and
    that commitment's revealed ids (None until revealed)."""

    commitment: str | None
    ids: frozenset[int] | None

    @classmethod
    def of(cls, state: DatanetCanaries | None) -> RunCanaries:
        commitment = state.in_force if state else None
        revealed = state.revealed.get(commitment) if state and commitment else None
        return cls(commitment, None if revealed is None else frozenset(revealed))

    def auc(self, scores: np.ndarray, contribution_ids: list[int]) -> float | None:
        """The run's canary AUC; None while unmeasured (no commitment, not revealed, or no canary among the
        run's contributions or nothing else)."""
        if self.ids is None:
            return None
        value = canary_auc(np.asarray(scores), np.array([c in self.ids for c in contribution_ids], dtype=bool))
        return None if np.isnan(value) else value

    def describe(self, auc: float | None) -> str:
        """What an operator reads in the run's output and metadata."""
        if self.commitment is None:
            return "unmeasured: no canary commitment on the log before this run"
        if auc is None:
            return f"pending: canaries {self.commitment[:18]}… not revealed yet"
        return f"{auc:.3f} on {len(self.ids or ())} revealed canaries"


def rows_canary_auc(rows: pa.Table) -> float | None:
    """The canary AUC of one run's influence rows whose ``canary`` column is set (``table.record_canaries``)."""
    ids = frozenset(c for c, flag in zip(rows["contribution_id"].to_pylist(), rows["canary"].to_pylist(),
                                         strict=True) if flag)
    return RunCanaries(None, ids).auc(rows["score"].to_numpy(), rows["contribution_id"].to_pylist())
