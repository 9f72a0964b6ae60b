"""The model that served an answer, rebuilt for scoring, and the prompt serving built, re-rendered per subset.

Scoring must see what generation saw: the same base model, the same adapter (or ensemble, merged by
serving's own ``merge`` with the event's weights), and the same prompt, which is serving's chat template
over ``serving.rag.augment`` of the caller's messages and the shown sources. The adapter's LoRA factors are
read by serving's loader and folded into a copy of the base weights (W + A^T B^T per projection), so the
plain Hugging Face forward of ``PrefixScorer`` computes what serving's batched LoRA forward computed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from pipelines.context_attribution.scorer import PrefixScorer
from pipelines.retrieval import Source
from serving import rag
from serving.adapter_source import AdapterSource
from serving.engine import ServedBase, load_adapter
from serving.lora import AdapterLoadError, LoraAdapter, merge


class UnknownAdapter(LookupError):
    """An answer's adapter the registry does not hold (or cannot load for the served base)."""


class UnknownBaseModel(LookupError):
    """An answer served on another base model than the one this stage can rebuild."""


class ContextExceeded(ValueError):
    """The rebuilt prompt and answer do not fit the base model's context (a tokenization round trip grew)."""


class ServedModels:
    """The served base and the merged model of each adapter combination, built once and kept (a few)."""

    def __init__(self, adapters_dir, base: ServedBase | None = None, keep: int = 4) -> None:
        self.base = base or ServedBase.tiny(max_batch=1)
        self.source = AdapterSource(adapters_dir, refresh_s=0.0)
        self.shapes = self.base.runner.lora_shapes()
        self.keep = keep
        self._models: dict[tuple, torch.nn.Module] = {}

    def model(self, event: dict) -> torch.nn.Module:
        """The base with the event's adapters (weighted as served) folded in."""
        if event["base_model_hash"] != self.base.hash:
            raise UnknownBaseModel(f"base model {event['base_model_hash'][:12]} is not the served "
                                   f"{self.base.name} ({self.base.hash[:12]})")
        key = tuple(zip(event["adapter_ids"], event["adapter_weights"], strict=True))
        if key not in self._models:
            if len(self._models) >= self.keep:
                self._models.pop(next(iter(self._models)))
            self._models[key] = self._build(key)
        return self._models[key]

    def _build(self, parts: tuple[tuple[str, float], ...]) -> torch.nn.Module:
        model = self.base.runner.model
        if not parts:
            return model
        loaded = []
        for adapter_id, weight in parts:
            entry = self.source.get(adapter_id)
            if entry is None:
                raise UnknownAdapter(f"adapter {adapter_id} is not in the registry")
            try:
                loaded.append((load_adapter(entry, self.base, self.shapes), weight))
            except AdapterLoadError as exc:
                raise UnknownAdapter(f"adapter {adapter_id} cannot be loaded: {exc}") from None
        adapter = loaded[0][0] if len(loaded) == 1 and loaded[0][1] == 1.0 else merge(loaded, "scoring")
        return _folded(model, adapter)

    def scorer(self, event: dict, texts: Sequence[str]) -> PrefixScorer:
        """Scores the event's answer under subsets of its sources (``texts`` as shown) in serving's prompt."""
        base = self.base
        messages = [(m["role"], m["content"]) for m in event["messages"]]
        sources = [Source(s["contribution_id"], s["datanet_id"], s["contributor"], s["chunk_id"],
                          s["dataset_version"], text, s["score"])
                   for s, text in zip(event["retrieved_sources"], texts, strict=True)]

        def prefix(keep: Sequence[bool]) -> list[int]:
            kept = [(n, s) for n, (s, k) in enumerate(zip(sources, keep, strict=True), start=1) if k]
            chat = rag.augment(messages, [s for _, s in kept], [n for n, _ in kept])
            return base.encode(base.chat_prompt(chat))

        answer_ids = base.encode(event["answer"])
        full = len(prefix(np.ones(len(sources), dtype=bool))) + len(answer_ids)
        if full > base.context:
            raise ContextExceeded(f"prompt and answer re-encode to {full} tokens, past the {base.context}-token "
                                  "context")
        return PrefixScorer(self.model(event), prefix, answer_ids, base.tokenizer.pad_token_id)


def _folded(model: torch.nn.Module, adapter: LoraAdapter) -> torch.nn.Module:
    """A copy of ``model`` with ``adapter``'s deltas added to its Conv1D weights (in, out)."""
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for module, (a, b) in adapter.factors.items():
            folded.get_submodule(module).weight += a.T @ b.T
    return folded.eval()
