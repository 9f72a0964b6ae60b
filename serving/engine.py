"""The engine: model names to adapters, text to token streams, finished requests to usage events.

A ``model`` is one of: an adapter id (``ad-…``), a datanet alias ``dn-<id>`` (its latest adapter), the base
model's own name, or an ensemble of those joined by ``+``, each optionally weighted with ``*w``
(``dn-1*0.7+dn-2*0.3``). Unweighted parts of an ensemble share equally (``dn-1+dn-2`` is their mean).
An ensemble is merged on demand into one adapter (``serving.lora.merge``) and cached under its canonical
name, so it rides in mixed batches like any adapter.

The HTTP layer calls :meth:`Engine.generate` and never sees adapters; the batcher never sees names.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import base_model_hash, load_model, load_tokenizer
from serving.adapter_source import AdapterEntry, AdapterSource, fits
from serving.batcher import Batcher, Generation, SamplingParams, StepOutput
from serving.cache import AdapterCache
from serving.errors import AdapterUnavailable, BaseModelMismatch, GenerationFailed, InvalidRequest, ModelNotFound
from serving.influence import AnswerAttributor, AttributionUnavailable
from serving.llama import LlamaRunner
from serving.lora import AdapterLoadError, LoraAdapter, load_peft_folder, merge
from serving.model import GPT2Runner, Runner
from serving.punica import LoraSlots
from serving.usage import UsageSink, usage_event

_PART = re.compile(r"^(?P<name>[A-Za-z0-9._:-]+?)(?:\*(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?$")
_ALIAS = re.compile(r"^dn-(\d+)$")


RUNNERS: dict[str, type[Runner]] = {"gpt2": GPT2Runner, "llama": LlamaRunner}
"""The serving forward of each architecture (``config.model_type``) a base model may have."""


def runner_for(model: PreTrainedModel, max_batch: int, context: int | None = None) -> Runner:
    """The runner of ``model``'s architecture; another architecture is refused naming the served ones."""
    runner = RUNNERS.get(model.config.model_type)
    if runner is None:
        raise ValueError(f"no serving runner for architecture {model.config.model_type!r} "
                         f"(served: {', '.join(sorted(RUNNERS))})")
    return runner(model, max_batch, context)


@dataclass(frozen=True)
class ServedBase:
    """The one base model every served adapter shares."""

    name: str
    hash: str
    tokenizer: PreTrainedTokenizerBase
    runner: Runner
    eos_id: int

    @classmethod
    def load(cls, spec: BaseModelSpec, max_batch: int = 16, context: int | None = None) -> ServedBase:
        """Any base of the training stage's registry (``pipelines.training.base_model``), by the same name and
        hash its adapters' lineage records; ``context`` caps the served context (and the KV cache)."""
        tokenizer = load_tokenizer(spec)
        return cls(spec.name, base_model_hash(spec), tokenizer, runner_for(load_model(spec), max_batch, context),
                   tokenizer.eos_token_id)

    @classmethod
    def tiny(cls, spec: BaseModelSpec | None = None, max_batch: int = 16) -> ServedBase:
        """The seeded tiny GPT-2 the training stage fine-tunes (built locally, nothing downloaded)."""
        return cls.load(spec or BaseModelSpec(), max_batch)

    @property
    def context(self) -> int:
        return self.runner.n_positions

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as training tokenized it (no special tokens added; those in the text count)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat_prompt(self, messages: Sequence[tuple[str, str]]) -> str:
        """The chat as the base model's own chat template renders it, ending with the assistant's turn; a base
        without one (the tiny model) gets role-tagged turns, then the assistant's tag."""
        if self.tokenizer.chat_template:
            chat = [{"role": role, "content": content} for role, content in messages]
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


def load_adapter(entry: AdapterEntry, base: ServedBase, shapes: dict[str, tuple[int, int]]) -> LoraAdapter:
    """Reads an adapter's PEFT folder for ``base``; :class:`AdapterLoadError` when it was trained on another."""
    if not fits(entry, base.hash):
        raise AdapterLoadError(f"{entry.adapter_id} was trained on base model {entry.base_model_hash[:12]}, "
                               f"not the served {base.name} ({base.hash[:12]})")
    return load_peft_folder(entry.folder, shapes, entry.adapter_id)


@dataclass(frozen=True)
class Resolved:
    """A model name resolved to concrete adapters (empty for the base model) and their weights."""

    name: str
    parts: tuple[tuple[AdapterEntry, float], ...]

    @property
    def key(self) -> str:
        """Cache key: the adapter id, or the canonical ensemble name over concrete ids."""
        if len(self.parts) == 1 and self.parts[0][1] == 1.0:
            return self.parts[0][0].adapter_id
        return "+".join(f"{e.adapter_id}*{w:g}" for e, w in self.parts)


@dataclass
class GenerateRequest:
    request_id: str
    model: str
    prompt: str
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    logprobs: bool = False
    caller: str | None = None
    retrieved_sources: Sequence[dict] = ()  # what retrieval put in the prompt (serving.rag.usage_sources)
    messages: Sequence[tuple[str, str]] = ()  # the caller's chat before the sources were added (RAG only)
    source_words: Sequence[int] = ()  # words of each retrieved source the prompt showed (serving.rag.shown_words)
    attribution_k: int | None = None  # name the k most influential training contributions (serving.influence)


@dataclass
class Delta:
    """A piece of a completion as it streams: new text, the tokens behind it, and the finish when last."""

    text: str
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    influences: list[dict] | None = None  # on the last delta, when the request asked for attribution


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check, its adapter resident: what :meth:`Engine.stream` runs."""

    request: GenerateRequest
    resolved: Resolved
    prompt: list[int]
    max_tokens: int
    adapter: LoraAdapter | None
    started: float


class Engine:
    """One base model, an adapter source and cache, a batcher, and where usage events go."""

    def __init__(self, base: ServedBase, source: AdapterSource, cache: AdapterCache, usage: UsageSink,
                 attributor: AnswerAttributor | None = None) -> None:
        self.base, self.source, self.cache, self.usage, self.attributor = base, source, cache, usage, attributor
        self.shapes = base.runner.lora_shapes()
        self.slots = LoraSlots(self.shapes, base.runner.max_batch + 1)
        self.batcher = Batcher(base.runner, self.slots)
        self.started = time.time()

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()

    # ---- names --------------------------------------------------------------------------------

    def resolve(self, model: str) -> Resolved:
        """Parses and resolves ``model``; raises :class:`ModelNotFound` naming what is unknown."""
        if model == self.base.name:
            return Resolved(model, ())
        pieces = model.split("+")
        parsed = [_PART.match(p.strip()) for p in pieces]
        if not all(parsed):
            raise ModelNotFound(model)
        weights = [float(m["weight"]) if m["weight"] else None for m in parsed]
        if len(pieces) > 1 and any(w is None for w in weights):
            weights = [w if w is not None else 1.0 / len(pieces) for w in weights]
        parts = []
        for match, weight in zip(parsed, weights, strict=True):
            entry = self._entry(match["name"])
            if entry is None:
                raise ModelNotFound(match["name"] if len(pieces) > 1 else model)
            parts.append((entry, 1.0 if weight is None else weight))
        return Resolved(model, tuple(parts))

    def _entry(self, name: str) -> AdapterEntry | None:
        alias = _ALIAS.match(name)
        if alias:
            return self.latest(int(alias[1]))
        entry = self.source.get(name)
        if entry is not None and not fits(entry, self.base.hash):
            raise BaseModelMismatch(entry.adapter_id, entry.base_model_hash, self.base.name, self.base.hash)
        return entry

    def entries(self) -> list[AdapterEntry]:
        """The adapters this server can serve: every datanet's, trained on its base."""
        return self.source.entries(self.base.hash)

    def latest(self, datanet_id: int) -> AdapterEntry | None:
        """What ``dn-<id>`` names here: the datanet's newest adapter trained on this base."""
        return self.source.latest(datanet_id, self.base.hash)

    def load(self, entry: AdapterEntry) -> LoraAdapter:
        """Reads an adapter's PEFT folder for this base (runs in the cache's loader threads)."""
        return load_adapter(entry, self.base, self.shapes)

    async def adapter(self, resolved: Resolved) -> LoraAdapter | None:
        """The resident adapter for ``resolved``, loading (and merging) it off the batcher's thread."""
        if not resolved.parts:
            return None
        key = resolved.key
        cached = self.cache.lookup(key)
        if cached is not None:
            return cached
        try:
            loaded = [await self.cache.get(e.adapter_id, lambda e=e: self.load(e)) for e, _ in resolved.parts]
        except AdapterLoadError as exc:
            raise AdapterUnavailable(f"adapter could not be loaded: {exc}") from None
        if len(loaded) == 1 and key == loaded[0].key:
            return loaded[0]
        merged = merge([(a, w) for a, (_, w) in zip(loaded, resolved.parts, strict=True)], key)
        self.cache.put(key, merged)
        return merged

    # ---- generation ---------------------------------------------------------------------------

    def check_length(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The max_tokens to run with; refuses prompts and budgets that do not fit the context."""
        context = self.base.context
        if prompt_tokens == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if prompt_tokens >= context:
            raise InvalidRequest(f"the prompt has {prompt_tokens} tokens; this model's context is {context} tokens "
                                 "and leaves no room for a completion", param="prompt", code="context_length_exceeded")
        if max_tokens is None:
            return context - prompt_tokens
        if prompt_tokens + max_tokens > context:
            raise InvalidRequest(f"max_tokens {max_tokens} + {prompt_tokens} prompt tokens exceed this model's "
                                 f"context of {context} tokens", param="max_tokens", code="context_length_exceeded")
        return max_tokens

    async def prepare(self, request: GenerateRequest) -> Prepared:
        """Resolves the model, tokenizes, checks the lengths and loads the adapter: every refusal happens here,
        before a response (or a stream) has started."""
        started = time.perf_counter()
        resolved = self.resolve(request.model)
        prompt = self.base.encode(request.prompt)
        max_tokens = self.check_length(len(prompt), request.max_tokens)
        if request.attribution_k is not None:
            if self.attributor is None:
                raise AttributionUnavailable("this server does not attribute answers")
            await asyncio.to_thread(self.attributor.check, [e.adapter_id for e, _ in resolved.parts])
        adapter = await self.adapter(resolved)
        return Prepared(request, resolved, prompt, max_tokens, adapter, started)

    async def stream(self, prepared: Prepared) -> AsyncIterator[Delta]:
        """Streams the completion; the last delta carries the finish reason and the token counts.

        Ends with one usage event whatever happens once started: finished, ended by a stop string, the
        client gone (the caller closes this iterator or its task is cancelled), or a failed step.
        """
        request, prompt = prepared.request, prepared.prompt
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StepOutput] = asyncio.Queue()
        params = SamplingParams(max_tokens=prepared.max_tokens, temperature=request.temperature, top_p=request.top_p,
                                seed=request.seed, stop_token_ids=frozenset({self.base.eos_id}),
                                want_logits=request.logprobs)
        gen = Generation(prompt, prepared.adapter, params,
                         lambda out: loop.call_soon_threadsafe(queue.put_nowait, out))
        text = _Detokenizer(self.base.tokenizer, request.stop)
        finish, completion, influences = "cancelled", 0, None
        self.batcher.submit(gen)
        try:
            while True:
                out = await queue.get()
                if out.finish == "error":
                    finish = "error"
                    raise GenerationFailed(f"generation failed: {out.error}")
                tokens = [out.token] if out.token is not None and out.token != self.base.eos_id else []
                completion += out.token is not None
                piece, stopped = text.push(tokens)
                logits = [out.logits] if out.logits is not None else []
                reason = "stop" if stopped else out.finish
                if reason is not None:
                    finish = reason
                    piece = piece if stopped else piece + text.flush()
                    if request.attribution_k is not None:
                        influences = await asyncio.to_thread(
                            self.attributor.top, prepared.resolved.parts[0][0].adapter_id, request.prompt,
                            text.sent_text(), request.attribution_k)
                    yield Delta(piece, tokens, logits, finish, len(prompt), completion, influences)
                    return
                if piece or logits:
                    yield Delta(piece, tokens, logits)
        finally:
            gen.cancel()
            self.usage.record(usage_event(
                request_id=request.request_id, model=request.model,
                adapters=[(e.adapter_id, e.datanet_id, e.dataset_version, w) for e, w in prepared.resolved.parts],
                base_model_hash=self.base.hash, prompt_tokens=len(prompt), completion_tokens=completion,
                latency_s=time.perf_counter() - prepared.started, caller=request.caller, finish_reason=finish,
                retrieved_sources=request.retrieved_sources, messages=request.messages, answer=text.sent_text(),
                source_words=request.source_words, influences=influences,
            ))


class _Detokenizer:
    """Incremental text of a token stream: holds back incomplete UTF-8 and any possible start of a stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0
        self.hold = max((len(s) for s in self.stop), default=1) - 1

    def push(self, tokens: list[int]) -> tuple[str, bool]:
        """New text ready to send, and whether a stop string ended the completion."""
        self.ids.extend(tokens)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for s in self.stop:
            at = text.find(s, max(0, self.sent - len(s) + 1))
            if at >= 0:
                piece = text[self.sent:at]
                self.sent = at
                return piece, True
        end = len(text) - self.hold
        if text.endswith("\ufffd"):
            end = min(end, len(text) - 1)
        piece = text[self.sent:max(end, self.sent)]
        self.sent += len(piece)
        return piece, False

    def sent_text(self) -> str:
        """The text sent so far: the answer as the caller received it (before any citation markers)."""
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)[:self.sent]

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece, self.sent = text[self.sent:], len(text)
        return piece

