"""Per-example gradients with torch.func and their random projection to a fixed width per layer.

Gradients for a batch come from one ``vmap(grad(loss))`` over ``functional_call`` (no Python loop over
examples). Each layer's gradient is projected to ``projection_dim`` columns by a seeded Gaussian matrix that
is generated block by block, so neither the stored gradients nor the projection need memory that grows with
the model (layers already narrower than ``projection_dim`` are kept exact).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, vmap

from pipelines.attribution.task import Example, Params, Task

_BLOCK = 8192  # rows of a projection block generated at once


@dataclass(frozen=True)
class Layout:
    """Parameter names grouped into layers, and each layer's column range in a projected gradient."""

    layers: tuple[tuple[str, tuple[str, ...], int], ...]
    """(layer name, its parameter names, its parameter count)."""
    dim: int

    @classmethod
    def of(cls, task: Task, params: Params, dim: int) -> Layout:
        groups: dict[str, list[str]] = {}
        for name in params:
            groups.setdefault(task.layer(name), []).append(name)
        layers = tuple((layer, tuple(names), sum(params[n].numel() for n in names)) for layer, names in groups.items())
        return cls(layers=layers, dim=dim)

    @property
    def widths(self) -> list[int]:
        return [min(size, self.dim) for _, _, size in self.layers]

    @property
    def slices(self) -> list[slice]:
        ends = np.cumsum([0, *self.widths])
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(ends)]

    @property
    def width(self) -> int:
        return int(sum(self.widths))


class Projector:
    """Seeded block-wise Gaussian projection, scaled by 1/sqrt(width) so inner products are kept on average."""

    def __init__(self, layout: Layout, seed: int, cache_mb: int = 64) -> None:
        self.layout = layout
        self.seed = seed
        self.cache_floats = cache_mb << 18  # blocks kept up to this many float32s, drawn again beyond
        self._cache: dict[tuple[int, int], torch.Tensor] = {}
        self._cached = 0

    def _block(self, layer: int, start: int, rows: int) -> torch.Tensor:
        key = (layer, start)
        if key in self._cache:
            return self._cache[key]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + layer * 65_537 + start)
        block = torch.randn(rows, self.layout.dim, generator=gen) / self.layout.dim**0.5
        if self._cached + block.numel() <= self.cache_floats:
            self._cache[key] = block
            self._cached += block.numel()
        return block

    def __call__(self, grads: Params) -> torch.Tensor:
        """(batch, width) projected gradient from per-example gradients keyed by parameter name."""
        out = []
        for index, (_, names, size) in enumerate(self.layout.layers):
            flat = torch.cat([grads[n].flatten(1) for n in names], dim=1)
            if size <= self.layout.dim:
                out.append(flat)
                continue
            acc = torch.zeros(flat.shape[0], self.layout.dim, dtype=flat.dtype)
            for start in range(0, size, _BLOCK):
                rows = min(_BLOCK, size - start)
                acc += flat[:, start:start + rows] @ self._block(index, start, rows)
            out.append(acc)
        return torch.cat(out, dim=1)


def per_example_gradients(task: Task, params: Params, batch: Example, query: bool = False) -> Params:
    """Gradients of each example's loss (or measurement) w.r.t. ``params``: leading dimension = batch."""
    loss = task.query_loss if query else task.example_loss
    return vmap(grad(loss), in_dims=(None, 0))(params, batch)


def projected_gradients(task: Task, checkpoints: list[Params], batch: Example, projector: Projector,
                        query: bool = False) -> np.ndarray:
    """(batch, checkpoints, width) float32: one projected gradient per example and checkpoint."""
    per_ckpt = [per_example_gradients(task, params, batch, query) for params in checkpoints]
    return project_checkpoints(projector, per_ckpt).to(torch.float32).numpy()


def project_checkpoints(projector: Projector, per_ckpt: list[Params]) -> torch.Tensor:
    """(batch, checkpoints, width): every checkpoint's gradients projected in one pass, so each projection
    block is generated once per batch, not once per checkpoint (a real model's blocks outgrow the cache)."""
    joined = {name: torch.cat([grads[name] for grads in per_ckpt]) for name in per_ckpt[0]}
    projected = projector(joined)  # checkpoint-major rows
    return projected.view(len(per_ckpt), -1, projected.shape[1]).transpose(0, 1)


def sampled_gradients(task: Task, checkpoints: list[Params], batch: Example, projector: Projector, samples: int,
                      seed: int) -> np.ndarray:
    """(batch, samples, checkpoints, width) float32 projected gradients at targets drawn from the model.

    Their mean outer product is an unbiased estimate of the (projected) true Fisher = GGN, the curvature an
    influence function needs; the empirical-gradient Gram is not (it vanishes on well-fit examples). The batch
    is tiled ``samples`` times so all draws go through one vmap. ``seed`` fixes the draws, so a batch gives the
    same gradients whichever worker computes it."""
    generator = torch.Generator().manual_seed(seed)
    tiled = {k: torch.cat([v] * samples) for k, v in batch.items()}
    per_ckpt = [per_example_gradients(task, params, task.sample_targets(params, tiled, generator))
                for params in checkpoints]
    out = project_checkpoints(projector, per_ckpt).to(torch.float32)  # (samples * batch, C, K), sample-major
    return out.view(samples, -1, *out.shape[1:]).transpose(0, 1).numpy()
