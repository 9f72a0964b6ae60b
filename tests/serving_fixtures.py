"""Bases and adapters for the serving tests: PEFT folders written by peft itself, on the seeded tiny GPT-2 or
on a small random Llama saved as a local Hugging Face model directory (no weights downloaded).

Each adapter gets random (non-zero) A and B from its own seed, so different adapters really produce
different outputs, plus the ``lineage.json`` the registry writes beside the PEFT files.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pyarrow as pa
import torch
from peft import LoraConfig, get_peft_model

from payable.settings import Settings
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import CONV1D_ARCHITECTURES, base_model_hash, load_model, lora_targets
from schemas.datasets import CONTRIBUTION_ROW
from serving.batcher import Generation, SamplingParams, StepOutput
from serving.server import ServeOptions, ServerThread, build

LLAMA_CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<eos>\n{% endfor %}"
                       "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
"""The small Llama's chat template (its turns end with ``<eos>``, the tokenizer's own end token)."""


def write_llama_base(folder: Path, seed: int = 0) -> BaseModelSpec:
    """A random 2-layer Llama (hidden 64, 4 heads over 2 key/value heads, llama3 RoPE scaling, tied embeddings)
    with the tiny BPE tokenizer and a chat template, saved as a Hugging Face model directory; its spec."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipelines.training import tiny_model

    tokenizer = tiny_model.build_tokenizer(BaseModelSpec())  # a fresh one: load_tokenizer's is shared
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.1,
        rope_parameters={"rope_type": "llama3", "rope_theta": 50_000.0, "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return BaseModelSpec(name=str(folder))


def write_adapter(root: Path, datanet_id: int, dataset_version: int, seed: int, r: int = 8,
                  spec: BaseModelSpec | None = None, target_modules: tuple[str, ...] = ()) -> str:
    """Saves a PEFT LoRA adapter of ``spec``'s base (the architecture's default targets unless given) under
    ``root/dn-<datanet>/<adapter id>/``; returns the adapter id."""
    spec = spec or BaseModelSpec()
    adapter_id = f"ad-test-{datanet_id}-{dataset_version}-{seed}"
    folder = Path(root) / f"dn-{datanet_id}" / adapter_id
    base = load_model(spec)
    architecture = base.config.model_type
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules or lora_targets(architecture)),
                        lora_dropout=0.0, fan_in_fan_out=architecture in CONV1D_ARCHITECTURES, bias="none",
                        init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(base, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft's random init is small; scale so adapters visibly differ
            param.data.mul_(4.0)
    torch.random.set_rng_state(rng)
    model.save_pretrained(str(folder))
    (folder / "lineage.json").write_text(json.dumps({
        "adapter_id": adapter_id, "datanet_id": datanet_id, "dataset_version": dataset_version,
        "base_model": {"name": spec.name, "hash": base_model_hash(spec)},
    }))
    return adapter_id


def contribution_rows(datanet_id: int, texts: dict[int, str]) -> pa.Table:
    """Dataset rows (``schemas.datasets.CONTRIBUTION_ROW``) of contributions ``id -> text`` of one datanet."""
    return pa.Table.from_pylist([
        {"contribution_id": c, "datanet_id": datanet_id, "contributor": f"0x{c:040x}", "content_hash": f"0x{c:064x}",
         "text": t, "size": len(t), "block_number": c, "fact_event_id": f"f{c}", "verdict_id": f"v{c}"}
        for c, t in texts.items()], schema=CONTRIBUTION_ROW)


class RecordingUsage:
    """A usage sink that keeps the events (for tests that are not about Kafka)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def record(self, event: dict) -> None:
        self.events.append(event)


def make_engine(adapters_dir: Path, max_batch: int = 8, max_adapters: int = 64, max_bytes: int = 1 << 30,
                spec: BaseModelSpec | None = None, context: int | None = None):
    """An engine over ``spec``'s base (the tiny one by default) and ``adapters_dir``, its batcher started (call
    ``engine.stop()``)."""
    from serving.adapter_source import AdapterSource
    from serving.cache import AdapterCache
    from serving.engine import Engine, ServedBase

    base = ServedBase.load(spec or BaseModelSpec(), max_batch, context)
    engine = Engine(base, AdapterSource(adapters_dir, refresh_s=0.0), AdapterCache(max_adapters, max_bytes),
                    RecordingUsage())
    engine.start()
    return engine


def usage_of(server, request_id: str) -> dict:
    """The one usage event a running test server buffered for ``request_id`` (waits up to 30 s: the event
    follows the response, and under load 9 it came more than 4 s after one)."""
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in server.service.usage.buffered() if e["request_id"] == request_id]
        if found:
            assert len(found) == 1
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no usage event for {request_id} within 30 s")
        time.sleep(0.02)


@contextmanager
def running_server(settings: Settings, max_batch: int = 4, base: str | None = None) -> Iterator[ServerThread]:
    """A real uvicorn server over ``settings``' adapters (on the tiny base unless ``base`` names another) on a free
    port, stopped on exit."""
    options = ServeOptions(max_batch=max_batch, **({"base": base} if base else {}))
    with ServerThread(build(settings, options), usage_timeout_s=0.5) as running:
        yield running


def openai_client(server: ServerThread, timeout: float = 60) -> openai.OpenAI:
    """The real ``openai`` client pointed at a running test server, without retries."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)


def idle(engine) -> bool:
    """Waits for the batcher to let its last rows leave (it reports a finish before the row leaves)."""
    for _ in range(500):
        if engine.batcher.running == 0 and engine.slots.resident == 0:
            return True
        threading.Event().wait(0.01)
    return False


def adapter(engine, name):
    if name is None:
        return None
    resolved = engine.resolve(name)
    if len(resolved.parts) == 1:
        entry = resolved.parts[0][0]
        return engine.cache.load_now(entry.adapter_id, lambda: engine.load(entry))
    for entry, _ in resolved.parts:
        engine.cache.load_now(entry.adapter_id, lambda e=entry: engine.load(e))
    return asyncio.run(engine.adapter(resolved))


class Run:
    """Requests submitted to the batcher, optionally released when another has made k tokens."""

    def __init__(self, engine):
        self.engine = engine
        self.outputs: dict[str, list[StepOutput]] = {}
        self.done = threading.Semaphore(0)
        self.triggers: dict[tuple[str, int], list[Generation]] = {}
        self.order: list[tuple[str, int]] = []

    def request(self, label, adapter_obj, prompt, max_tokens, after=None):
        self.outputs[label] = []

        def sink(out, label=label):
            self.outputs[label].append(out)
            if out.token is not None:
                self.order.append((label, len(self.outputs[label])))
                for gen in self.triggers.pop((label, len(self.outputs[label])), []):
                    self.engine.batcher.submit(gen)
            if out.finish is not None:
                self.done.release()

        gen = Generation(prompt, adapter_obj, SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                                             want_logits=True), sink)
        self.triggers.setdefault(after, []).append(gen)

    def wait(self):
        for gen in self.triggers.pop(None, []):  # every trigger is in place before the first request runs
            self.engine.batcher.submit(gen)
        for _ in self.outputs:
            assert self.done.acquire(timeout=60)
        return {label: ([o.token for o in outs if o.token is not None],
                        [o.logits for o in outs if o.logits is not None]) for label, outs in self.outputs.items()}
