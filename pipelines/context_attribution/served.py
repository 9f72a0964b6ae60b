"""The model that served an answer, rebuilt for scoring, and the prompt serving built, re-rendered per subset.

Scoring must see what generation saw: the same base model (any base of the registry, resolved from the
answer's base hash: ``ServedModels``), the same adapter (or ensemble, merged by
serving's own ``merge`` with the event's weights), and the same prompt, which is serving's chat template
over ``serving.rag.augment`` of the caller's messages and the shown sources. The adapter's LoRA factors are
read by serving's loader and folded into a copy of the base weights (each projection's delta ``B A`` in that
module's own weight layout), so the plain Hugging Face forward of ``PrefixScorer`` computes what serving's
batched LoRA forward computed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipelines.context_attribution.scorer import PrefixScorer
from pipelines.retrieval import Source
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import base_model_hash
from serving import rag
from serving.adapter_source import AdapterEntry, AdapterSource
from serving.engine import ServedBase, load_adapter
from serving.lora import AdapterLoadError, LoraAdapter, merge


class UnknownAdapter(LookupError):
    """An answer's adapter the registry does not hold (or cannot load for the served base)."""


class UnknownBaseModel(LookupError):
    """An answer served on a base model this stage cannot rebuild (nothing resolves to its hash, or it won't load)."""


class ContextExceeded(ValueError):
    """The rebuilt prompt and answer do not fit the base model's context (a tokenization round trip grew)."""


class ServedModels:
    """The served bases (at most ``keep_bases``, by recent use) and the merged model of each adapter combination
    on them (at most ``keep``), built once and kept.

    An answer names its base by hash only; the base to rebuild is what the lineage of one of its adapters
    records (the spec it was trained on), or, for an answer of the base model alone, the base name the server
    recorded as the model. A spec is loaded only when its hash is the answer's (the hash covers the real weights,
    so a lineage or a name cannot point at other weights than those that served); anything else is
    :class:`UnknownBaseModel`.
    """

    def __init__(self, adapters_dir, keep: int = 4, keep_bases: int = 2) -> None:
        self.source = AdapterSource(adapters_dir, refresh_s=0.0)
        self.hashes_dir = Path(adapters_dir)  # the training stage's cache of base hashes (no re-read of weights)
        self.keep, self.keep_bases = keep, keep_bases
        self._bases: dict[str, ServedBase] = {}
        self._models: dict[tuple, torch.nn.Module] = {}

    def base(self, event: dict) -> ServedBase:
        """The base model that served ``event``, loaded on first use; :class:`UnknownBaseModel` when no lineage
        or base name resolves to its hash, or that base cannot be loaded."""
        wanted = event["base_model_hash"]
        if wanted in self._bases:
            self._bases[wanted] = self._bases.pop(wanted)  # most recently used last
            return self._bases[wanted]
        spec = self._spec(event)
        if len(self._bases) >= self.keep_bases:  # before loading: two big bases at once is the peak to avoid
            evicted = self._bases.pop(next(iter(self._bases)))
            self._models = {k: m for k, m in self._models.items() if k[0] != evicted.hash}
        try:
            self._bases[wanted] = ServedBase.load(spec, max_batch=1)
        except (ValueError, OSError) as exc:
            raise UnknownBaseModel(f"base model {spec.name} ({wanted[:12]}) cannot be loaded: "
                                   f"{str(exc).splitlines()[0]}") from None
        return self._bases[wanted]

    def _spec(self, event: dict) -> BaseModelSpec:
        wanted = event["base_model_hash"]
        entries = [self._entry(a) for a in event["adapter_ids"]]
        candidates = [e.base_model for e in entries if e.base_model is not None]
        if not event["adapter_ids"]:
            candidates.append(BaseModelSpec(name=event["model"]))  # the server names its base by its registry name
        for spec in dict.fromkeys(candidates):
            try:
                if base_model_hash(spec, cache_dir=self.hashes_dir) == wanted:
                    return spec
            except (ValueError, OSError):
                continue  # a name or lineage that no longer resolves: another candidate may
        raise UnknownBaseModel(f"base model {wanted[:12]} is not one this stage can rebuild: no lineage of the "
                               f"answer's adapters nor its model name {event['model']!r} resolves to it")

    def _entry(self, adapter_id: str) -> AdapterEntry:
        entry = self.source.get(adapter_id)
        if entry is None:
            raise UnknownAdapter(f"adapter {adapter_id} is not in the registry")
        return entry

    def model(self, event: dict) -> torch.nn.Module:
        """The event's base with the event's adapters (weighted as served) folded in."""
        base = self.base(event)
        key = (base.hash, *zip(event["adapter_ids"], event["adapter_weights"], strict=True))
        if key not in self._models:
            if len(self._models) >= self.keep:
                self._models.pop(next(iter(self._models)))
            self._models[key] = self._build(base, key[1:])
        return self._models[key]

    def _build(self, base: ServedBase, parts: tuple[tuple[str, float], ...]) -> torch.nn.Module:
        model = base.runner.model
        if not parts:
            return model
        shapes = base.runner.lora_shapes()
        loaded = []
        for adapter_id, weight in parts:
            try:
                loaded.append((load_adapter(self._entry(adapter_id), base, shapes), weight))
            except AdapterLoadError as exc:
                raise UnknownAdapter(f"adapter {adapter_id} cannot be loaded: {exc}") from None
        adapter = loaded[0][0] if len(loaded) == 1 and loaded[0][1] == 1.0 else merge(loaded, "scoring")
        return folded(model, adapter)

    def scorer(self, event: dict, texts: Sequence[str]) -> PrefixScorer:
        """Scores the event's answer under subsets of its sources (``texts`` as shown) in serving's prompt."""
        base = self.base(event)
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


def folded(model: torch.nn.Module, adapter: LoraAdapter) -> torch.nn.Module:
    """A copy of ``model`` with ``adapter``'s weight deltas added: ``A^T B^T`` (in, out) is the layout of GPT-2's
    ``Conv1D`` weights; an ``nn.Linear`` (Llama's projections) stores (out, in), so it takes the transpose."""
    result = copy.deepcopy(model)
    with torch.no_grad():
        for name, (a, b) in adapter.factors.items():
            module = result.get_submodule(name)
            delta = a.T @ b.T
            module.weight += delta.T if isinstance(module, torch.nn.Linear) else delta
    return result.eval()
