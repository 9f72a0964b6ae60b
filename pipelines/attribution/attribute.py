"""Attribution entry points: score every accepted contribution of an adapter's dataset version, write the table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from payable.settings import Settings
from pipelines.attribution.aggregate import contribution_scores, evidence, ranks
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.table import INFLUENCE, write_influence
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import build_tokenizer
from pipelines.training.data import Examples, fingerprint, read_version, split_train_eval, tokenize
from pipelines.training.registry import AdapterRecord, AdapterRegistry
from pipelines.training.train import load_adapter


def influence_rows(record: AdapterRecord, contributions: pa.Table, query_ids: list[str], trained: np.ndarray,
                   example_scores: np.ndarray, examples: Examples, args: ScoreArguments) -> pa.Table:
    """The influence table of one run from its example-by-query scores (pure: no model, no I/O)."""
    cids = contributions["contribution_id"].to_pylist()
    query_index = {q: j for j, q in enumerate(query_ids)}
    self_query = np.array([query_index.get(f"c{cid}", -1) for cid in cids], dtype=np.int64)
    agg = contribution_scores(example_scores, examples.owner.numpy(), contributions["content_hash"].to_pylist(),
                              self_query, args.harm_margin)
    helped, hurt = evidence(agg.per_query, query_ids, args.top_queries)
    n = len(cids)
    return pa.table({
        "contribution_id": cids, "contributor": contributions["contributor"],
        "datanet_id": contributions["datanet_id"], "dataset_version": [record.dataset_version] * n,
        "adapter_id": [record.adapter_id] * n, "method": [args.method] * n,
        "content_hash": contributions["content_hash"], "score": agg.score, "rank": ranks(agg.score),
        "copies": agg.copies, "trained": trained, "harmful": agg.harmful,
        "helped_queries": helped, "hurt_queries": hurt,
    }, schema=INFLUENCE)


def attribute_record(registry: AdapterRegistry, settings: Settings, record: AdapterRecord, args: ScoreArguments,
                     use_beam: bool = False) -> pa.Table:
    """Scores every contribution of the adapter's dataset version (held-out ones too) against its eval queries."""
    dataset = read_version(record.dataset_uri, record.dataset_version)
    if fingerprint(dataset.table) != record.dataset_fingerprint:
        raise ValueError(f"{record.dataset_uri}@{record.dataset_version} no longer matches {record.adapter_id}")
    train_args = TrainingArguments.from_dict(record.training_arguments)
    train_rows, queries = split_train_eval(dataset.table, settings.lance_dir, record.datanet_id,
                                           train_args.eval_holdout_mod)
    tokenizer = build_tokenizer(train_args.base.vocab_size)
    examples = tokenize(dataset.table["text"].to_pylist(), tokenizer, train_args.max_length)
    query_examples = tokenize(queries["text"].to_pylist(), tokenizer, train_args.max_length)
    model, checkpoints = load_adapter(registry, record)
    lrs = [c.learning_rate for c in record.checkpoints]
    if use_beam:
        from pipelines.attribution.beam import score_examples_beam

        scores = score_examples_beam(LoRALanguageModelTask(model), checkpoints, lrs, examples, query_examples, args)
    else:
        scores = score_examples(LoRALanguageModelTask(model), checkpoints, lrs, examples.batch(slice(None)),
                                query_examples.batch(slice(None)), args)
    # a query longer than max_length is several examples: its loss influence is their sum
    query_scores = np.zeros((scores.shape[0], queries.num_rows))
    np.add.at(query_scores.T, query_examples.owner.numpy(), scores.T)
    trained_ids = set(train_rows["contribution_id"].to_pylist())
    trained = np.array([c in trained_ids for c in dataset.table["contribution_id"].to_pylist()])
    return influence_rows(record, dataset.table, queries["query_id"].to_pylist(), trained, query_scores, examples,
                          args)


def attribute(settings: Settings, datanet_id: int, adapter_id: str | None = None,
              args: ScoreArguments | None = None, use_beam: bool = False) -> pa.Table:
    """Scores the adapter (latest of the datanet if ``None``), writes ``<lance_dir>/influence.lance``, returns rows."""
    args = args or ScoreArguments()
    registry = AdapterRegistry(settings.adapters_dir)
    record = registry.record(datanet_id, adapter_id) if adapter_id else registry.latest(datanet_id)
    if record is None:
        raise LookupError(f"datanet {datanet_id} has no trained adapter")
    table = attribute_record(registry, settings, record, args, use_beam=use_beam)
    write_influence(settings.lance_dir, table)
    return table
