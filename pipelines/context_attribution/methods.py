"""Attribution methods over an ``AnswerScorer``, each reporting the forward passes it spent.

- ``leave_one_out``: w_i = log p(full) - log p(without i); n + 1 passes; the classic reference.
- ``contextcite-<m>``: the surrogate fitted on m random half-ablations (ContextCite's estimator).
- ``loo+random-<m>``: the surrogate fitted jointly on the leave-one-out masks and m random ablations.
  Leave-one-out pins each source's effect next to the full context (where the answer was produced); the
  random masks add the interactions a half-ablated context shows. With m = n + 1 it spends
  2(n + 1) passes: for the 4-8 chunks a RAG answer cites, 10-18 passes against ContextCite-64's 64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.context_attribution.ablations import leave_one_out_masks, random_masks
from pipelines.context_attribution.scorer import AnswerScorer
from pipelines.context_attribution.surrogate import fit_surrogate

DEFAULT_METHOD = "loo+random"


@dataclass(frozen=True)
class ContextAttribution:
    """Per-source weights of one answer (log-probability units) and what they cost."""

    method: str
    weights: np.ndarray
    forward_passes: int


def leave_one_out(scorer: AnswerScorer, n_sources: int, seed: int = 0) -> ContextAttribution:
    values = scorer.log_prob(leave_one_out_masks(n_sources))
    return ContextAttribution("leave_one_out", values[0] - values[1:], n_sources + 1)


def context_cite(scorer: AnswerScorer, n_sources: int, seed: int = 0, ablations: int = 64) -> ContextAttribution:
    masks = random_masks(n_sources, ablations, seed)
    weights, _ = fit_surrogate(masks, scorer.log_prob(masks))
    return ContextAttribution(f"contextcite-{ablations}", weights, ablations)


def loo_plus_random(scorer: AnswerScorer, n_sources: int, seed: int = 0,
                    ablations: int | None = None) -> ContextAttribution:
    extra = n_sources + 1 if ablations is None else ablations
    masks = np.vstack([leave_one_out_masks(n_sources), random_masks(n_sources, extra, seed)])
    weights, _ = fit_surrogate(masks, scorer.log_prob(masks))
    return ContextAttribution(DEFAULT_METHOD, weights, len(masks))


METHODS: dict[str, Callable[..., ContextAttribution]] = {
    "leave_one_out": leave_one_out, "contextcite": context_cite, DEFAULT_METHOD: loo_plus_random}


def attribute(scorer: AnswerScorer, n_sources: int, method: str = DEFAULT_METHOD, seed: int = 0,
              **options: int) -> ContextAttribution:
    """Weights of the ``n_sources`` sources of one answer by ``method`` (a key of ``METHODS``)."""
    if n_sources == 0:
        return ContextAttribution(method, np.empty(0), 0)
    if method not in METHODS:
        raise ValueError(f"unknown context-attribution method {method!r}; choose one of {sorted(METHODS)}")
    return METHODS[method](scorer, n_sources, seed, **options)
