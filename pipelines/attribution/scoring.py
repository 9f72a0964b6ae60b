"""Example-by-query influence scores in one process (tests, bench); ``beam.py`` runs the same steps over batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import track

from payable.progress import console
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.gradients import Layout, Projector, projected_gradients, sampled_gradients
from pipelines.attribution.methods import (
    Moments,
    checkpoints_used,
    datainf_correction,
    datainf_damping,
    moments,
    precondition,
    scores,
)
from pipelines.attribution.sizing import sized
from pipelines.attribution.store import contribution_features
from pipelines.attribution.task import Example, Params, Task
from pipelines.training.data import Examples
from pipelines.training.lora import deterministic


@dataclass(frozen=True)
class Setup:
    """What every batch needs: parameters at the used checkpoints, their learning rates, the projector."""

    params: list[Params]
    learning_rates: list[float]
    projector: Projector

    @property
    def slices(self) -> list[slice]:
        return self.projector.layout.slices


def setup(task: Task, checkpoints: list[Params], learning_rates: list[float], args: ScoreArguments) -> Setup:
    used = checkpoints_used(args.method, len(checkpoints))
    params = [task.params(checkpoints[c]) for c in used]
    layout = Layout.of(task, params[0], args.projection_dim)
    return Setup(params, [learning_rates[c] for c in used], Projector(layout, args.seed, args.projector_cache_mb))


def batches(examples: Example, size: int) -> list[Example]:
    n = len(next(iter(examples.values())))
    return [{k: v[i:i + size] for k, v in examples.items()} for i in range(0, n, size)]


def gradients(task: Task, prepared: Setup, examples: Example, args: ScoreArguments, query: bool = False,
              label: str = "gradients") -> np.ndarray:
    """(examples, C, K) projected gradients, batch by batch; (0, C, K) for no examples (all reused)."""
    parts = [projected_gradients(task, prepared.params, b, prepared.projector, query)
             for b in track(batches(examples, args.batch_size), description=label, transient=True, console=console)]
    if not parts:
        return np.zeros((0, len(prepared.params), prepared.projector.layout.width), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def sample_seed(args: ScoreArguments, start: int) -> int:
    """Seed of the target draws for the train batch starting at ``start`` (the same in process and in Beam)."""
    return args.seed * 1_000_003 + start


def fisher_gradients(task: Task, prepared: Setup, examples: Example, args: ScoreArguments) -> np.ndarray:
    """(n, S, C, K) projected gradients at model-sampled targets, batch by batch."""
    parts = [sampled_gradients(task, prepared.params, b, prepared.projector, args.fisher_samples,
                               sample_seed(args, i * args.batch_size))
             for i, b in enumerate(track(batches(examples, args.batch_size), description="fisher gradients",
                                         transient=True, console=console))]
    return np.concatenate(parts, axis=0)


def score_examples(task: Task, checkpoints: list[Params], learning_rates: list[float], train: Example,
                   queries: Example, args: ScoreArguments, by_checkpoint: bool = False,
                   keep_gradients: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """(n_train, n_queries) influence matrix of every train example on every query; with ``by_checkpoint``
    (n_train, n_queries, checkpoints used), each checkpoint's term apart. ``keep_gradients`` receives the
    (n_train, C, K) projected train gradients."""
    args = sized(args, task, train)
    with deterministic(args.num_threads), torch.no_grad():
        prepared = setup(task, checkpoints, learning_rates, args)
        q = gradients(task, prepared, queries, args, query=True, label="query gradients")
        g = gradients(task, prepared, train, args, label=f"{args.method} gradients")
        if keep_gradients is not None:
            keep_gradients(g)
        sampled = fisher_gradients(task, prepared, train, args) if args.method == "influence" else None
        return score_gradients(g, q, prepared, args, sampled, by_checkpoint)


def score_gradients(g: np.ndarray, q: np.ndarray, prepared: Setup, args: ScoreArguments,
                    sampled: np.ndarray | None = None, by_checkpoint: bool = False) -> np.ndarray:
    """The method applied to precomputed projected gradients (both passes over ``g``; ``sampled`` for
    ``influence``)."""
    stats = Moments()
    for i in range(0, len(g), args.batch_size):
        part = None if sampled is None else sampled[i:i + args.batch_size]
        stats = stats.merge(moments(g[i:i + args.batch_size], args.method, prepared.slices, part))
    correction = None
    if args.method == "datainf":
        lam = datainf_damping(stats, args.damping)
        correction = sum(datainf_correction(g[i:i + args.batch_size], q, lam, prepared.slices)
                         for i in range(0, len(g), args.batch_size))
    p = precondition(q, stats, args, prepared.slices, prepared.learning_rates, correction)
    return scores(g, p, by_checkpoint)


def tracin_by_contribution(task: Task, checkpoints: list[Params], learning_rates: list[float], train: Examples,
                           n: int, queries: Example, args: ScoreArguments, reused: np.ndarray | None = None,
                           found: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TracIn of ``n`` contributions on every query, (n, m, C), scored from each contribution's summed projected
    gradient (n, C * K) float32, which it returns too (the gradient store's rows).

    Rows with ``found`` (none by default) are taken from ``reused`` (the store's) with no gradient pass; the
    others are computed
    from their examples (``train.owner``: an example's contribution row). TracIn is linear in the gradients and
    needs no statistics over the training set, so a contribution's score is its sum's dot product with the
    queries; scoring the stored float32 sums (never each example) gives a run that reuses the store the same
    scores, to the bit, as one that computed everything."""
    if args.method != "tracin":
        raise ValueError(f"contribution features score TracIn only, not {args.method}")
    args = sized(args, task, train.batch(slice(0, 1)))
    owner = train.owner.numpy()
    found = np.zeros(n, dtype=bool) if found is None else found
    todo = ~found[owner]
    with deterministic(args.num_threads), torch.no_grad():
        prepared = setup(task, checkpoints, learning_rates, args)
        q = gradients(task, prepared, queries, args, query=True, label="query gradients")
        g = gradients(task, prepared, train.batch(torch.from_numpy(todo)), args, label="tracin gradients")
    features = contribution_features(g, owner[todo], n)
    if found.any():
        features[found] = reused[found]
    shape = (n, len(prepared.params), prepared.projector.layout.width)
    return score_gradients(features.reshape(shape), q, prepared, args, by_checkpoint=True), features
