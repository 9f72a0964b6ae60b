"""The linear surrogate: log p(answer | subset) ~ bias + weights . mask, and how well it predicts (LDS)."""

from __future__ import annotations

import numpy as np


def fit_surrogate(masks: np.ndarray, values: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, float]:
    """(weights (n_sources,), bias) by ridge-regularized least squares on centred data.

    A small ridge keeps the fit defined when there are fewer distinct masks than sources; the bias is
    not penalized. ContextCite uses a Lasso for sparsity with many sources; with the handful of
    retrieved chunks here, least squares is as accurate and has no tuning.
    """
    x = masks.astype(np.float64)
    y = np.asarray(values, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + ridge * len(y) * np.eye(x.shape[1]), xc.T @ yc)
    return weights, float(y_mean - x_mean @ weights)


def lds(weights: np.ndarray, masks: np.ndarray, values: np.ndarray) -> float:
    """Linear datamodeling score: Spearman correlation between the surrogate's predictions and the measured
    log-probabilities on held-out masks (the bias cannot change a rank, so it is not needed)."""
    predicted = masks.astype(np.float64) @ weights
    if np.ptp(predicted) == 0 or np.ptp(values) == 0:
        return 0.0
    return float(np.corrcoef(_ranks(predicted), _ranks(np.asarray(values, dtype=np.float64)))[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (what Spearman's correlation is defined on)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]
