"""Is a negative score evidence of harm, or noise? Tests a contribution's score must pass to be flagged.

A gradient-based influence score is a noisy estimate: a contribution's mean influence over a handful of eval
queries moves with which queries are in the eval set and with the checkpoint the gradients are taken at. On
ordinary prose some honest contributions always score a little below zero. A contribution is *flagged*
only when its harm survives all three of:

1. the queries: a percentile bootstrap over the eval queries puts the whole ``confidence`` interval of its
   mean score below zero (it hurts the eval set, not one query), with at least ``min_queries`` queries;
2. the checkpoints: its score is negative at every checkpoint the method uses that carries weight (a term at
   least ``checkpoint_weight`` of the largest one: not one snapshot's artefact);
3. the datanet's own distribution: its robust z-score (median and MAD, which a few harmful contributions cannot
   inflate the way they inflate a standard deviation) is below ``-outlier_z``.

A flag is a suspicion, not a verdict: ``counterfactual.py`` refits the adapter without the flagged
contributions, and the reward split slashes only when that refit confirms it (``pipelines.rewards.split``).
Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.attribution.arguments import HarmArguments

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
_MEAN_AD_TO_SIGMA = 1.2533  # the same for the mean absolute deviation (fallback when over half the scores tie)
_ROWS_PER_CHUNK = 256  # contributions resampled at once: memory is rows x bootstrap_samples x queries


@dataclass(frozen=True)
class NoiseEvidence:
    """Per contribution (in input order): the bootstrap interval of its score, its robust z-score, its score
    at each checkpoint, how many eval queries scored it, and whether all tests flag it."""

    low: np.ndarray
    high: np.ndarray
    robust_z: np.ndarray
    checkpoint_scores: np.ndarray
    """(contributions, checkpoints) mean influence over the queries at each checkpoint."""
    queries: np.ndarray
    flagged: np.ndarray


def bootstrap_interval(per_query: np.ndarray, samples: int, confidence: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each row's mean over its non-NaN columns, resampling the columns (queries).

    ``per_query`` is (contributions, queries), NaN where a query does not count for a contribution (itself).
    Every row is resampled with the same query draws, so the intervals are comparable across contributions."""
    n, m = per_query.shape
    if m == 0:
        return np.zeros(n), np.zeros(n)
    draws = np.random.default_rng(seed).integers(0, m, size=(samples, m))
    valid = ~np.isnan(per_query)
    values = np.where(valid, per_query, 0.0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.empty(n), np.empty(n)
    for start in range(0, n, _ROWS_PER_CHUNK):
        rows = slice(start, start + _ROWS_PER_CHUNK)
        sums = values[rows][:, draws].sum(-1)  # (rows, samples)
        counts = valid[rows][:, draws].sum(-1)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        low[rows], high[rows] = np.nanquantile(means, [tail, 1.0 - tail], axis=1)
    return low, high


def robust_z(score: np.ndarray) -> np.ndarray:
    """(score - median) / (1.4826 MAD); the mean absolute deviation stands in when the MAD is 0; 0 when all tie."""
    if not len(score):
        return np.zeros(0)
    deviation = score - np.median(score)
    scale = _MAD_TO_SIGMA * float(np.median(np.abs(deviation)))
    if scale == 0.0:
        scale = _MEAN_AD_TO_SIGMA * float(np.mean(np.abs(deviation)))
    return deviation / scale if scale > 0.0 else np.zeros_like(score)


def signs_agree(per_checkpoint: np.ndarray, weight: float) -> np.ndarray:
    """Per row: every checkpoint term at least ``weight`` times the row's largest magnitude is negative."""
    magnitude = np.abs(per_checkpoint)
    weighty = magnitude >= weight * magnitude.max(axis=1, keepdims=True)
    return np.all((per_checkpoint < 0.0) | ~weighty, axis=1) & np.any(per_checkpoint < 0.0, axis=1)


def noise_evidence(score: np.ndarray, per_query: np.ndarray, per_checkpoint: np.ndarray, args: HarmArguments,
                   seed: int) -> NoiseEvidence:
    """The module's three tests on one run's contribution scores (see the module docstring)."""
    low, high = bootstrap_interval(per_query, args.bootstrap_samples, args.confidence, seed)
    z = robust_z(score)
    queries = (~np.isnan(per_query)).sum(axis=1)
    flagged = ((high < 0.0) & signs_agree(per_checkpoint, args.checkpoint_weight) & (z < -args.outlier_z)
               & (queries >= args.min_queries))
    return NoiseEvidence(low=low, high=high, robust_z=z, checkpoint_scores=per_checkpoint, queries=queries,
                         flagged=flagged)
