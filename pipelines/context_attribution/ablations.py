"""Ablation masks over an answer's sources: rows are subsets, True = the source is kept in the prompt."""

from __future__ import annotations

import numpy as np


def random_masks(n_sources: int, n_masks: int, seed: int, keep: float = 0.5) -> np.ndarray:
    """(n_masks, n_sources) bool: each source kept with probability ``keep``, independently (ContextCite's
    design: every pair of sources is seen together and apart, so the surrogate can separate them)."""
    rng = np.random.default_rng(seed)
    return rng.random((n_masks, n_sources)) < keep


def leave_one_out_masks(n_sources: int) -> np.ndarray:
    """(n_sources + 1, n_sources) bool: the full context, then each source removed once."""
    return np.vstack([np.ones((1, n_sources), dtype=bool), ~np.eye(n_sources, dtype=bool)])
