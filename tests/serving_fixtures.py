"""Adapters for the serving tests: PEFT folders written by peft itself on the seeded tiny base.

Each adapter gets random (non-zero) A and B from its own seed, so different adapters really produce
different outputs, plus the ``lineage.json`` the registry writes beside the PEFT files.
"""

from __future__ import annotations

import json
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
from pipelines.training.base_model import base_model_hash, build_base_model
from schemas.datasets import CONTRIBUTION_ROW
from serving.server import ServeOptions, ServerThread, build


def write_adapter(root: Path, datanet_id: int, dataset_version: int, seed: int, r: int = 8,
                  spec: BaseModelSpec | None = None, target_modules: tuple[str, ...] = ("c_attn", "c_proj")) -> str:
    """Saves a PEFT LoRA adapter under ``root/dn-<datanet>/<adapter id>/``; returns the adapter id."""
    spec = spec or BaseModelSpec()
    adapter_id = f"ad-test-{datanet_id}-{dataset_version}-{seed}"
    folder = Path(root) / f"dn-{datanet_id}" / adapter_id
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.0,
                        fan_in_fan_out=True, bias="none", init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build_base_model(spec), config)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft's random init is small; scale so adapters visibly differ
            param.data.mul_(4.0)
    torch.random.set_rng_state(rng)
    model.save_pretrained(str(folder))
    (folder / "lineage.json").write_text(json.dumps({
        "adapter_id": adapter_id, "datanet_id": datanet_id, "dataset_version": dataset_version,
        "base_model": {"name": "tiny-gpt2", "hash": base_model_hash(spec)},
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


def make_engine(adapters_dir: Path, max_batch: int = 8, max_adapters: int = 64, max_bytes: int = 1 << 30):
    """An engine over the tiny base and ``adapters_dir``, its batcher started (call ``engine.stop()``)."""
    from serving.adapter_source import AdapterSource
    from serving.cache import AdapterCache
    from serving.engine import Engine, ServedBase

    engine = Engine(ServedBase.tiny(max_batch=max_batch), AdapterSource(adapters_dir, refresh_s=0.0),
                    AdapterCache(max_adapters, max_bytes), RecordingUsage())
    engine.start()
    return engine


def usage_of(server, request_id: str) -> dict:
    """The one usage event a running test server buffered for ``request_id`` (waits for it briefly)."""
    for _ in range(200):
        found = [e for e in server.service.usage.buffered() if e["request_id"] == request_id]
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no usage event for {request_id}")


@contextmanager
def running_server(settings: Settings, max_batch: int = 4) -> Iterator[ServerThread]:
    """A real uvicorn server over ``settings``' adapters on a free port, stopped on exit."""
    with ServerThread(build(settings, ServeOptions(max_batch=max_batch)), usage_timeout_s=0.5) as running:
        yield running


def openai_client(server: ServerThread, timeout: float = 60) -> openai.OpenAI:
    """The real ``openai`` client pointed at a running test server, without retries."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)
