"""Attribution entry points: score every accepted contribution of an adapter's dataset version, write the table."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import torch

from payable.settings import Settings
from pipelines.attribution.aggregate import ContributionScores, contribution_scores, evidence, ranks
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.canaries import DatanetCanaries, for_datanet
from pipelines.attribution.counterfactual import Refit, refit_without
from pipelines.attribution.harm import NoiseEvidence, noise_evidence
from pipelines.attribution.quality import LdsMeasurement, RunCanaries, measure_lds
from pipelines.attribution.scoring import score_examples, setup, tracin_by_contribution
from pipelines.attribution.sizing import GradientBatch, gradient_batch
from pipelines.attribution.store import GradientReport, reusable_gradients, save_gradients, weights_fingerprint
from pipelines.attribution.table import INFLUENCE, write_influence
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import load_tokenizer
from pipelines.training.data import (
    Examples,
    fingerprint,
    fingerprint_queries,
    read_version,
    split_train_eval,
    tokenize,
)
from pipelines.training.registry import AdapterRecord, AdapterRegistry, adapter_id
from pipelines.training.train import load_adapter


class Unscorable(ValueError):
    """A datanet's run cannot be scored (no eval queries, no training rows, a contribution with no query but
    itself): it fails alone, with this reason, rather than writing scores that mean nothing."""


@dataclass(frozen=True)
class Attribution:
    """One run's influence table, the counterfactual refit behind its flags (None when nothing was flagged),
    its quality figures (``quality.py``), and its gradient batch (the memory bound, ``sizing.py``)."""

    table: pa.Table
    refit: Refit | None
    lds: LdsMeasurement
    canaries: RunCanaries
    gradients: GradientReport
    batch: GradientBatch


@dataclass(frozen=True)
class RunScores:
    """A run's contribution scores and the noise tests on them (pure: no model, no I/O)."""

    scores: ContributionScores
    noise: NoiseEvidence


def run_scores(contributions: pa.Table, query_ids: list[str], example_scores: np.ndarray, owner: np.ndarray,
               args: ScoreArguments) -> RunScores:
    """Contribution scores and harm flags from (examples, queries, checkpoints) scores (``owner[i]``: the
    contribution row of score row i)."""
    cids = contributions["contribution_id"].to_pylist()
    query_index = {q: j for j, q in enumerate(query_ids)}
    self_query = np.array([query_index.get(f"c{cid}", -1) for cid in cids], dtype=np.int64)
    alone = [cid for cid, q in zip(cids, self_query, strict=True) if q >= 0 and len(query_ids) == 1]
    if alone:
        raise Unscorable(f"contribution {alone[0]} is the datanet's only eval query, so nothing can score it: "
                         "add eval queries to the datanet's spec")
    agg = contribution_scores(example_scores, owner, contributions["content_hash"].to_pylist(),
                              self_query)
    return RunScores(agg, noise_evidence(agg.score, agg.per_query, agg.per_checkpoint, args.harm, args.seed))


def influence_rows(record: AdapterRecord, contributions: pa.Table, query_ids: list[str], trained: np.ndarray,
                   run: RunScores, refit: Refit | None, args: ScoreArguments,
                   lds: LdsMeasurement | None = None, canaries: RunCanaries | None = None) -> pa.Table:
    """The influence table of one run (pure: no model, no I/O)."""
    agg, noise = run.scores, run.noise
    lds = lds or LdsMeasurement(float("nan"), 0, 0.0)
    canaries = canaries or RunCanaries(None, None)
    cids = contributions["contribution_id"].to_pylist()
    refitted = set(refit.removed) if refit else set()
    helped, hurt = evidence(agg.per_query, query_ids, args.top_queries)
    n = len(cids)
    return pa.table({
        "contribution_id": cids, "contributor": contributions["contributor"],
        "datanet_id": contributions["datanet_id"], "dataset_version": [record.dataset_version] * n,
        "adapter_id": [record.adapter_id] * n, "method": [args.method] * n,
        "content_hash": contributions["content_hash"], "score": agg.score, "rank": ranks(agg.score),
        "copies": agg.copies, "trained": trained, "harmful": noise.flagged,
        "helped_queries": helped, "hurt_queries": hurt,
        "score_low": noise.low, "score_high": noise.high, "checkpoint_scores": noise.checkpoint_scores.tolist(),
        "robust_z": noise.robust_z,
        "refit_delta": [refit.delta if c in refitted else None for c in cids],
        "refit_spread": [refit.spread if c in refitted else None for c in cids],
        "lds": [None if np.isnan(lds.value) else lds.value] * n, "lds_subsets": [lds.subsets] * n,
        "canary_commitment": [canaries.commitment] * n,
        "canary": [None if canaries.ids is None else c in canaries.ids for c in cids],
        "canary_auc": [canaries.auc(agg.score, cids)] * n,
    }, schema=INFLUENCE)


def attribute_record(registry: AdapterRegistry, settings: Settings, record: AdapterRecord, args: ScoreArguments,
                     use_beam: bool = False, canaries: DatanetCanaries | None = None) -> Attribution:
    """Scores every contribution of the adapter's dataset version (held-out ones too) against its eval queries,
    refits without the flagged ones to confirm them (``counterfactual.py``), and measures the run's quality:
    its LDS over retrained subsets, and its AUC on the datanet's canaries when ``canaries`` (the log's state)
    holds a commitment already revealed (else the commitment in force is recorded for a later reveal)."""
    dataset = read_version(record.dataset_uri, record.dataset_version)
    if fingerprint(dataset.table) != record.dataset_fingerprint:
        raise ValueError(f"{record.dataset_uri}@{record.dataset_version} no longer matches {record.adapter_id}")
    train_args = TrainingArguments.from_dict(record.training_arguments)
    train_rows, queries = split_train_eval(dataset.table, settings.lance_dir, record.datanet_id,
                                           train_args.eval_holdout_mod)
    if queries.num_rows == 0 or train_rows.num_rows == 0:
        raise Unscorable(f"datanet {record.datanet_id} has {queries.num_rows} eval queries and "
                         f"{train_rows.num_rows} training rows: both are needed to score influence")
    tokenizer = load_tokenizer(train_args.base)
    examples = tokenize(dataset.table["text"].to_pylist(), tokenizer, train_args.max_length)
    query_examples = tokenize(queries["text"].to_pylist(), tokenizer, train_args.max_length)
    model, checkpoints = load_adapter(registry, record)
    task = LoRALanguageModelTask(model)
    batch = gradient_batch(args, task, examples.batch(slice(0, 1)))
    args = replace(args, batch_size=batch.size)
    lrs = [c.learning_rate for c in record.checkpoints]
    trained_ids = set(train_rows["contribution_id"].to_pylist())
    cids = dataset.table["contribution_id"].to_pylist()
    trained = np.array([c in trained_ids for c in cids])
    owner = examples.owner.numpy()
    if use_beam:
        from pipelines.attribution.beam import score_examples_beam
        from pipelines.runners import pipeline_options

        scores = score_examples_beam(task, checkpoints, lrs, examples, query_examples, args,
                                     by_checkpoint=True, options=pipeline_options(settings))
        report = GradientReport(len(cids), 0, "the Beam runner computes every gradient (it does not read the store)")
    elif args.method != "tracin":
        scores = score_examples(task, checkpoints, lrs, examples.batch(slice(None)),
                                query_examples.batch(slice(None)), args, by_checkpoint=True)
        report = GradientReport(len(cids), 0, f"the store holds TracIn features; {args.method} needs statistics "
                                              "over every example's gradient")
    else:
        scores, owner, report = _tracin_with_store(registry, record, args, dataset.table, trained, examples,
                                                   query_examples, task, checkpoints)
    # a query longer than max_length is several examples: its loss influence is their sum
    query_scores = np.zeros((scores.shape[0], queries.num_rows, scores.shape[2]))
    np.add.at(query_scores.transpose(1, 0, 2), query_examples.owner.numpy(), scores.transpose(1, 0, 2))
    run = run_scores(dataset.table, queries["query_id"].to_pylist(), query_scores, owner, args)
    suspects = [c for c, flagged, t in zip(cids, run.noise.flagged, trained, strict=True) if flagged and t]
    refit = None
    if suspects and args.harm.refit and len(suspects) < train_rows.num_rows:
        refit = refit_without(train_rows, queries["text"].to_pylist(), suspects, train_args, args.harm.spread_seeds,
                              known=_registered_eval_loss(record, train_rows, queries, train_args))
    row_of = {cid: i for i, cid in enumerate(cids)}
    per_query = run.scores.per_query[[row_of[c] for c in train_rows["contribution_id"].to_pylist()]]
    lds = measure_lds(train_rows, queries["text"].to_pylist(), per_query,
                      train_args, args.quality)
    judged = RunCanaries.of(canaries)
    table = influence_rows(record, dataset.table, queries["query_id"].to_pylist(), trained, run, refit, args,
                           lds, judged)
    return Attribution(table, refit, lds, judged, report, batch)


def _tracin_with_store(registry: AdapterRegistry, record: AdapterRecord, args: ScoreArguments, contributions: pa.Table,
                       trained: np.ndarray, examples: Examples, queries: Examples, task: LoRALanguageModelTask,
                       checkpoints: list) -> tuple[np.ndarray, np.ndarray, GradientReport]:
    """TracIn scores computing only the gradients the store lacks at these weights, and the store (re)written
    with every contribution's features: (one score row per contribution, its row, what was recomputed and
    why)."""
    weights = weights_fingerprint(checkpoints)
    lrs = [c.learning_rate for c in record.checkpoints]
    n = contributions.num_rows
    with torch.no_grad():
        width = setup(task, checkpoints, lrs, args).projector.layout.width
    reuse = reusable_gradients(registry, record, args, weights, contributions, len(checkpoints) * width)
    scores, features = tracin_by_contribution(task, checkpoints, lrs, examples, n, queries.batch(slice(None)), args,
                                              reuse.features, reuse.found)
    reused = int(reuse.found.sum())
    if reuse.source != record.adapter_id or reused < n:
        save_gradients(registry, record, args, contributions, trained, features, width, weights)
    return scores, np.arange(n), GradientReport(n - reused, reused, reuse.why)


def _registered_eval_loss(record: AdapterRecord, train_rows: pa.Table, queries: pa.Table,
                          args: TrainingArguments) -> dict[int, float]:
    """The adapter's own eval loss, by its seed, when it was fitted on exactly these rows and queries (its id says
    so): the refit's full-data fit at the adapter's seed, already done."""
    same = adapter_id(record.base_model["hash"], record.datanet_id, fingerprint(train_rows),
                      fingerprint_queries(queries), args.to_dict()) == record.adapter_id
    return {args.seed: record.metrics["eval_loss"]} if same else {}


def attribute(settings: Settings, datanet_id: int, adapter_id: str | None = None,
              args: ScoreArguments | None = None, use_beam: bool = False,
              canaries_from_log: bool = False) -> Attribution:
    """Scores the adapter (latest of the datanet if ``None``), writes ``<lance_dir>/influence.lance``; the one
    entry point of the CLI and the Dagster asset. With ``canaries_from_log`` (both set it) the run is judged by
    the datanet's canaries as the log at ``settings.kafka_bootstrap`` has them; without, its canary AUC is
    unmeasured (a run needing no broker). Raises ``Unscorable`` for a datanet that cannot be scored."""
    canaries = for_datanet(settings.kafka_bootstrap, datanet_id) if canaries_from_log else None
    args = args or ScoreArguments()
    registry = AdapterRegistry(settings.adapters_dir)
    record = registry.record(datanet_id, adapter_id) if adapter_id else registry.latest(datanet_id)
    if record is None:
        raise LookupError(f"datanet {datanet_id} has no trained adapter")
    result = attribute_record(registry, settings, record, args, use_beam=use_beam, canaries=canaries)
    write_influence(settings.lance_dir, result.table)
    return result
