"""Synthetic gradient-store features shaped like real ones, for the index test and the latency bench.

Measured on a real store (bench/scale.py's tiny GPT-2 adapter, 2,000 contributions, 4,608 columns: 3
checkpoints x 6 LoRA layers x 256): the top 16, 64, 128 and 256 singular directions hold 55%, 76%, 85% and
93% of the energy (a power law ``s_k ~ k^-0.6`` over 1,024 directions holds 63%, 79%, 85% and 91%), and the
row norms are log-normal (median 2.2, log std 0.19) with a few far larger. Isotropic noise around cluster
centres has neither property and makes any narrower projection look worse than it is on gradients, so the
search is sized on these instead.
"""

from __future__ import annotations

import numpy as np

SPECTRUM_SLOPE = -0.6
RANK = 1024
"""Directions generated (the real store's 1,000th singular value is 1% of its largest)."""
_BLOCK = 50_000


def gradient_like(n: int, dim: int, seed: int, basis_seed: int = 12345) -> np.ndarray:
    """(n, dim) float32 rows with a power-law spectrum along a fixed random basis and log-normal norms.

    ``basis_seed`` fixes the directions, so stored rows and queries drawn with other ``seed``s share them, as a
    served answer's gradient shares a store's. Generated in blocks: bounded temporaries at 1M rows."""
    rank = min(RANK, dim)
    basis = np.random.default_rng(basis_seed).standard_normal((rank, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    # (independent Gaussian rows are orthogonal to within about 1/sqrt(dim): no QR needed)
    scale = (np.arange(1, rank + 1, dtype=np.float32) ** SPECTRUM_SLOPE)[None, :]
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        z = rng.standard_normal((m, rank), dtype=np.float32) * scale
        z *= np.exp(0.19 * rng.standard_normal((m, 1), dtype=np.float32)) / np.linalg.norm(z, axis=1, keepdims=True)
        out[start:start + m] = z @ basis
    return out
