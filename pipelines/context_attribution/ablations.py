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


def factorial_masks(n_sources: int) -> np.ndarray:
    """A two-level orthogonal design folded over: (2m, n_sources) bool, m the smallest power of two > n_sources.

    The columns of a Sylvester-Hadamard matrix of order m (all but the constant one) are orthogonal, so each
    source is kept in half the rows and every pair of sources is kept together in a quarter of them; adding
    the complement of every row (the foldover) makes each main effect orthogonal to every two-source
    interaction as well (a resolution IV design). Least squares on these rows gives the main effects of the
    uniform distribution over all 2^n subsets, which ContextCite's random half-ablations only approach as
    their number grows: 16 rows for up to 7 sources, 32 for up to 15.
    """
    order = 1 << n_sources.bit_length()  # > n_sources, so there are enough non-constant columns
    hadamard = np.ones((1, 1), dtype=np.int8)
    while len(hadamard) < order:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    design = hadamard[:, 1:n_sources + 1] > 0
    return np.vstack([design, ~design])
