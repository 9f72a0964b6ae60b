"""Influence scoring as a Beam pipeline over batches of examples (no runner-specific code).

Elements are example batches, never single examples. The diagram::

    query batches ─ Gradients ─ Stack ───────────────┐ (side input)
    train batches ─ Gradients ─┬─ Moments (combine) ─┼─> DataInf correction (combine) ─> Precondition
                               └──────────── Score (side input: preconditioned queries) ─> (start, scores)

Train gradients travel as (start, gradients, gradients at model-sampled targets or None): only ``influence``
computes the second, for its Fisher moments, seeded by the batch start as in process.

The model is rebuilt on each worker from a picklable task factory; the math is ``methods.py``'s.
"""

from __future__ import annotations

import io
import operator
import tempfile
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.gradients import projected_gradients, sampled_gradients
from pipelines.attribution.methods import (
    Moments,
    checkpoints_used,
    datainf_correction,
    datainf_damping,
    moments,
    precondition,
    scores,
)
from pipelines.attribution.scoring import sample_seed, setup
from pipelines.attribution.sizing import sized
from pipelines.attribution.task import Params, Task
from pipelines.training.data import Examples
from pipelines.training.lora import deterministic

Batch = tuple[int, dict[str, np.ndarray]]


class Gradients(beam.DoFn):
    """(start, inputs) -> (start, projected gradients (b, C, K)) for queries, and for train batches
    (start, projected gradients, sampled-target gradients (b, S, C, K) or None)."""

    def __init__(self, make_task: Callable[[], Task], checkpoints: list[Params], lrs: list[float],
                 args: ScoreArguments, query: bool) -> None:
        self.make_task, self.checkpoints, self.lrs, self.args, self.query = make_task, checkpoints, lrs, args, query

    def setup(self) -> None:
        torch.set_num_threads(self.args.num_threads)
        self.task = self.make_task()
        self.prepared = setup(self.task, self.checkpoints, self.lrs, self.args)

    def process(self, element: Batch) -> Iterator[tuple]:
        start, inputs = element
        with torch.no_grad(), deterministic(self.args.num_threads):
            batch = {k: torch.from_numpy(v) for k, v in inputs.items()}
            prepared = self.prepared
            grads = projected_gradients(self.task, prepared.params, batch, prepared.projector, self.query)
            if self.query:
                yield start, grads
                return
            sampled = None
            if self.args.method == "influence":
                sampled = sampled_gradients(self.task, prepared.params, batch, prepared.projector,
                                            self.args.fisher_samples, sample_seed(self.args, start))
            yield start, grads, sampled


def _stack(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    return np.concatenate([g for _, g in sorted(parts, key=operator.itemgetter(0))], axis=0)


def _batches(examples: Examples, size: int) -> list[Batch]:
    return [(start, {k: v.numpy() for k, v in examples.batch(slice(start, start + size)).items()})
            for start in range(0, len(examples), size)]


def build(p: beam.Pipeline, make_task: Callable[[], Task], checkpoints: list[Params], lrs: list[float],
          train: Examples, queries: Examples, args: ScoreArguments, slices: list[slice],
          by_checkpoint: bool = False) -> beam.PCollection:
    """Adds the scoring transforms to ``p``; returns a PCollection of (start, (b, m) scores) per train batch
    ((b, m, C) with ``by_checkpoint``)."""
    query_grads = (p | "QueryBatches" >> beam.Create(_batches(queries, args.batch_size))
                   | "QueryGradients" >> beam.ParDo(Gradients(make_task, checkpoints, lrs, args, query=True))
                   | "ListQueries" >> beam.combiners.ToList() | "StackQueries" >> beam.Map(_stack))
    grads = (p | "TrainBatches" >> beam.Create(_batches(train, args.batch_size))
             | "TrainGradients" >> beam.ParDo(Gradients(make_task, checkpoints, lrs, args, query=False)))
    stats = (grads | "Moments" >> beam.Map(lambda e: moments(e[1], args.method, slices, e[2]))
             | "SumMoments" >> beam.CombineGlobally(_merge))
    q = beam.pvalue.AsSingleton(query_grads)
    if args.method == "datainf":
        correction = (grads | "Correction" >> beam.Map(
            lambda e, q, s: datainf_correction(e[1], q, datainf_damping(s, args.damping), slices),
            q, beam.pvalue.AsSingleton(stats)) | "SumCorrection" >> beam.CombineGlobally(sum))
        corr = beam.pvalue.AsSingleton(correction)
    else:
        corr = None
    pre = (query_grads | "Precondition" >> beam.Map(
        lambda q, s, c=None: precondition(q, s, args, slices, lrs_used(args, lrs), c),
        beam.pvalue.AsSingleton(stats), *([corr] if corr is not None else [])))
    return grads | "Score" >> beam.Map(lambda e, pq: (e[0], scores(e[1], pq, by_checkpoint)),
                                       beam.pvalue.AsSingleton(pre))


def _merge(parts: Iterable[Moments]) -> Moments:
    total = Moments()
    for m in parts:
        total = total.merge(m)
    return total


def lrs_used(args: ScoreArguments, lrs: list[float]) -> list[float]:
    return [lrs[c] for c in checkpoints_used(args.method, len(lrs))]


def _write(scores: np.ndarray, path: str) -> None:
    with FileSystems.create(path) as f:
        np.save(f, scores)


def score_examples_beam(task: Task, checkpoints: list[Params], lrs: list[float], train: Examples,
                        queries: Examples, args: ScoreArguments, options: PipelineOptions | None = None,
                        make_task: Callable[[], Task] | None = None, output: str | None = None,
                        by_checkpoint: bool = False) -> np.ndarray:
    """Runs the pipeline and returns (n_train, n_queries) scores ((n_train, n_queries, C) with ``by_checkpoint``),
    written through ``output`` (any Beam filesystem path; a temporary local file by default). The runner comes
    from ``options`` (in-process by default)."""
    args = sized(args, task, train.batch(slice(0, 1)))
    slices = setup(task, checkpoints, lrs, args).slices
    make_task = make_task or (lambda: task)
    options = options or PipelineOptions(runner="DirectRunner", direct_running_mode="in_memory")
    with tempfile.TemporaryDirectory() as tmp:
        path = output or f"{tmp}/scores.npy"
        with beam.Pipeline(options=options) as p:
            out = build(p, make_task, checkpoints, lrs, train, queries, args, slices, by_checkpoint)
            _ = (out | "Collect" >> beam.combiners.ToList() | "StackScores" >> beam.Map(_stack)
                 | "Write" >> beam.Map(_write, path))
        with FileSystems.open(path) as f:
            return np.load(io.BytesIO(f.read()))
