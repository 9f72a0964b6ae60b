"""Per-answer attribution and store-only scoring: a text's TracIn influence read from the gradient store.

For an answer an adapter produced, the training contributions that most influenced it are those whose stored
gradients have the largest learning-rate-weighted dot product with the answer's own loss gradient (TracIn,
Pruthi et al. 2020), projected exactly as the store was: one small gradient pass over the answer (one per
checkpoint) and one vector search, never a pass over the training data. A new eval set is scored the same way.
The answer's loss is the mean next-token loss of ``prompt + completion``, the measurement attribution uses
for its eval queries, so the two agree on the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from payable.settings import Settings
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.attribute import attribute_record
from pipelines.attribution.gradients import projected_gradients
from pipelines.attribution.methods import Moments, precondition
from pipelines.attribution.scoring import Setup, setup
from pipelines.attribution.store import GradientStore, Hit, open_store
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import load_tokenizer
from pipelines.training.data import tokenize
from pipelines.training.lora import deterministic
from pipelines.training.registry import AdapterRecord, AdapterRegistry
from pipelines.training.train import load_adapter

_REBUILD = ScoreArguments(method="tracin")
"""The projection a missing store is rebuilt with (attribution's default)."""


def find_record(registry: AdapterRegistry, adapter_id: str) -> AdapterRecord:
    """An adapter's lineage by id alone (ids are unique across datanets: they hash the datanet id)."""
    found = sorted(Path(registry.root).glob(f"dn-*/{adapter_id}/lineage.json"))
    if not found:
        raise LookupError(f"no adapter {adapter_id}")
    return AdapterRecord.from_json(found[0].read_text())


def ensure_store(registry: AdapterRegistry, settings: Settings, record: AdapterRecord,
                 args: ScoreArguments = _REBUILD) -> tuple[GradientStore, str]:
    """The adapter's store and what was done: ``read`` it, or rebuilt it (``built: <why>``) by re-running
    TracIn attribution with ``args`` on the adapter's dataset version; the influence table is untouched."""
    store = open_store(registry, record)
    if store is not None:
        return store, "read"
    attribute_record(registry, settings, record, replace(args, method="tracin", harm=replace(args.harm, refit=False)))
    store = open_store(registry, record)
    assert store is not None, "attribution wrote no gradient store"
    return store, "built: the adapter had no gradient store"


@dataclass
class Attributor:
    """An adapter loaded once for queries: its model, projected-gradient setup, tokenizer and store."""

    record: AdapterRecord
    task: LoRALanguageModelTask
    prepared: Setup
    train_args: TrainingArguments
    store: GradientStore
    store_action: str

    def query_vectors(self, texts: list[str]) -> np.ndarray:
        """(len(texts), C * K) lr-weighted projected loss gradients (a long text: sum over its windows)."""
        examples = tokenize(texts, load_tokenizer(self.train_args.base), self.train_args.max_length)
        with deterministic(1), torch.no_grad():
            g = projected_gradients(self.task, self.prepared.params, examples.batch(slice(None)),
                                    self.prepared.projector, query=True)
        per_text = np.zeros((len(texts), *g.shape[1:]))
        np.add.at(per_text, examples.owner.numpy(), g.astype(np.float64))
        weighted = precondition(per_text, Moments(), ScoreArguments(method="tracin"), self.prepared.slices,
                                self.prepared.learning_rates)
        return weighted.reshape(len(texts), -1)

    def top(self, text: str, k: int) -> list[Hit]:
        return self.store.search(self.query_vectors([text])[0], k)


@lru_cache(maxsize=8)
def attributor(settings: Settings, adapter_id: str) -> Attributor:
    """Cached per process: loading the adapter and opening the store dominate a cold query."""
    registry = AdapterRegistry(settings.adapters_dir)
    record = find_record(registry, adapter_id)
    store, action = ensure_store(registry, settings, record)
    model, checkpoints = load_adapter(registry, record)
    task = LoRALanguageModelTask(model)
    with torch.no_grad():
        prepared = setup(task, checkpoints, [c.learning_rate for c in record.checkpoints], store.spec.arguments)
    return Attributor(record, task, prepared, TrainingArguments.from_dict(record.training_arguments), store, action)


def top_contributions(settings: Settings, adapter_id: str, prompt: str, completion: str, k: int = 10) -> list[Hit]:
    """The k trained contributions whose training most lowered the loss of this answer, most influential first."""
    return attributor(settings, adapter_id).top(prompt + completion, k)


def score_eval_set(settings: Settings, adapter_id: str, texts: list[str]) -> tuple[list[int], np.ndarray]:
    """Contribution ids and their (contributions, queries) TracIn scores on a new eval set, from the store."""
    found = attributor(settings, adapter_id)
    rows, scores = found.store.scores(found.query_vectors(texts))
    return rows["contribution_id"].to_pylist(), scores
