"""Influence math on projected gradients, with no model and no I/O.

Shapes: train gradients ``G`` are (n, C, K) and query gradients ``Q`` are (m, C, K) for C checkpoints and K
projected columns (layers side by side, see ``gradients.Layout``). Every method turns the queries into
preconditioned queries ``P`` (m, C, K) from statistics that are sums over training batches (so they combine
in any order, as Beam needs), and a batch's scores are ``einsum(G, P)``: (b, m). A positive score means
training on the example lowers the query's loss (it helped); negative means it raised it.

- TracIn (Pruthi et al. 2020): ``P_c = lr_c * Q_c`` summed over checkpoints.
- TRAK-style (Park et al. 2023): ``P_c = Q_c (G_c^T G_c + n*lambda_c I)^-1``, averaged over checkpoints.
- Influence function (Koh & Liang 2017) at the final checkpoint: ``P = Q (F + n*lambda I)^-1`` where ``F`` sums
  over examples the mean outer product of gradients at model-sampled targets (``gradients.sampled_gradients``):
  the projected true Fisher, i.e. the Gauss-Newton Hessian of cross-entropy. The empirical Gram that TRAK-style
  uses weighs examples by how badly they are fit, not by curvature; on a convex model this is the gap to an
  exact-Hessian influence function. Memory is (K, K) whatever the model size.
- DataInf (Kwon et al. 2024), final checkpoint, per layer l with damping ``lambda_l``:
  ``H_l^-1 q ~ (1/(n lambda_l)) (q - sum_i (q.v_i)/(lambda_l + |v_i|^2) v_i)`` (Sherman-Morrison per example).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.attribution.arguments import ScoreArguments


@dataclass
class Moments:
    """Sums over training examples: count, per-layer squared norms (C, L) and gradient Gram (C, K, K)."""

    n: int = 0
    sq_norms: np.ndarray | None = None
    gram: np.ndarray | None = None

    def merge(self, other: Moments) -> Moments:
        def add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return b if a is None else a if b is None else a + b

        return Moments(self.n + other.n, add(self.sq_norms, other.sq_norms), add(self.gram, other.gram))


def checkpoints_used(method: str, num_checkpoints: int) -> list[int]:
    """DataInf and the influence function are taken at the final adapter; the others use every checkpoint."""
    return [num_checkpoints - 1] if method in ("datainf", "influence") else list(range(num_checkpoints))


def moments(grads: np.ndarray, method: str, slices: list[slice], sampled: np.ndarray | None = None) -> Moments:
    """Pass 1 statistics of a train batch for ``method`` (TracIn needs none; ``influence`` reads ``sampled``,
    the batch's (b, S, C, K) gradients at model-sampled targets)."""
    if method == "influence":
        f = torch.from_numpy(sampled).permute(2, 0, 1, 3).flatten(1, 2)  # (C, b * S, K)
        gram = (f.transpose(1, 2) @ f).double().numpy()  # float32 products (torch: honours its thread count)
        return Moments(n=len(grads), gram=gram / sampled.shape[1])
    g = grads.astype(np.float64)
    if method == "datainf":
        sq = np.stack([(g[:, :, s] ** 2).sum(-1).sum(0) for s in slices], axis=-1)
        return Moments(n=len(g), sq_norms=sq)
    if method == "trak":
        return Moments(n=len(g), gram=np.stack([g[:, c].T @ g[:, c] for c in range(g.shape[1])]))
    return Moments(n=len(g))


def datainf_damping(stats: Moments, damping: float) -> np.ndarray:
    """Per checkpoint and layer: ``damping`` times the mean squared gradient norm (the DataInf default)."""
    return damping * stats.sq_norms / max(stats.n, 1)


def datainf_correction(grads: np.ndarray, queries: np.ndarray, lam: np.ndarray, slices: list[slice]) -> np.ndarray:
    """Pass 2 of DataInf for a train batch: ``sum_i (q.v_i)/(lambda + |v_i|^2) v_i`` per layer, shape (m, C, K)."""
    g, q = grads.astype(np.float64), queries.astype(np.float64)
    out = np.zeros_like(q)
    for layer, s in enumerate(slices):
        v, qs = g[:, :, s], q[:, :, s]
        weight = 1.0 / (lam[None, :, layer] + (v**2).sum(-1))  # (n, C)
        for c in range(g.shape[1]):
            out[:, c, s] = ((qs[:, c] @ v[:, c].T) * weight[None, :, c]) @ v[:, c]
    return out


def precondition(queries: np.ndarray, stats: Moments, args: ScoreArguments, slices: list[slice],
                 learning_rates: list[float], correction: np.ndarray | None = None) -> np.ndarray:
    """Preconditioned queries (m, C, K) for ``args.method`` from the combined statistics."""
    q = queries.astype(np.float64)
    if args.method == "tracin":
        return q * np.asarray(learning_rates, dtype=np.float64)[None, :, None]
    if args.method in ("trak", "influence"):
        out = np.empty_like(q)
        for c in range(q.shape[1]):
            gram = stats.gram[c]
            lam = args.damping * np.trace(gram) / gram.shape[0]
            factor = torch.linalg.cholesky(torch.from_numpy(gram + lam * np.eye(gram.shape[0])))  # damped: SPD
            out[:, c] = torch.cholesky_solve(torch.from_numpy(q[:, c].T.copy()), factor).numpy().T
        return out / q.shape[1]
    lam = datainf_damping(stats, args.damping)
    out = q * stats.n - correction  # the sum over i of (q - ...) has n copies of q
    for layer, s in enumerate(slices):
        out[:, :, s] /= stats.n * lam[None, :, layer, None]
    return out


def scores(grads: np.ndarray, preconditioned: np.ndarray, by_checkpoint: bool = False) -> np.ndarray:
    """(b, m) influence of each train example in the batch on each query; (b, m, C) with ``by_checkpoint``,
    each checkpoint's term apart (the harm evidence asks whether the sign holds at every checkpoint)."""
    g = grads.astype(np.float64)
    terms = np.stack([g[:, c] @ preconditioned[:, c].T for c in range(g.shape[1])], axis=-1)
    return terms if by_checkpoint else terms.sum(axis=-1)
