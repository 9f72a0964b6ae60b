"""The adapter cache: LRU by count and by bytes, pinning, counters, corrupt files refused, loads off the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from serving.cache import AdapterCache
from serving.engine import GenerateRequest
from serving.errors import AdapterUnavailable
from serving.lora import AdapterLoadError, LoraAdapter, load_peft_folder
from tests.serving_fixtures import make_engine, write_adapter


def fake(key: str, numel: int = 100) -> LoraAdapter:
    return LoraAdapter(key, {"m": (torch.zeros(1, numel), torch.zeros(1, 1))})


def load_all(cache: AdapterCache, keys, numel: int = 100) -> None:
    for key in keys:
        cache.load_now(key, lambda key=key: fake(key, numel))


def test_lru_by_count_with_hits_misses_evictions():
    cache = AdapterCache(max_adapters=2)
    load_all(cache, ["a", "b"])
    assert cache.lookup("a") is not None  # a is now the most recent
    load_all(cache, ["c"])
    state = cache.state()
    assert state.adapters == ["a", "c"]
    assert (state.counters["hits"], state.counters["misses"], state.counters["evictions"]) == (1, 3, 1)
    assert state.counters["loads"] == 3 and state.counters["load_seconds_total"] > 0


def test_byte_bound_and_pinning():
    one = fake("x").nbytes
    cache = AdapterCache(max_adapters=100, max_bytes=3 * one)
    load_all(cache, ["a"])
    cache.pin("a")
    load_all(cache, ["b", "c", "d", "e"])
    state = cache.state()
    assert state.resident_bytes <= 3 * one and state.resident == 3
    assert "a" in state.adapters and state.pinned == 1  # the oldest, but pinned
    assert state.adapters == ["a", "d", "e"]
    cache.unpin("a")
    load_all(cache, ["f"])
    assert "a" not in cache.state().adapters


def test_one_load_per_adapter_for_concurrent_requests():
    cache = AdapterCache()
    calls = []

    def load():
        calls.append(1)
        threading.Event().wait(0.05)
        return fake("a")

    async def main():
        return await asyncio.gather(*[cache.get("a", load) for _ in range(5)])

    results = asyncio.run(main())
    assert len(calls) == 1 and all(r is results[0] for r in results)


def test_corrupt_adapter_is_reported_and_not_cached(tmp_path):
    adapter_id = write_adapter(tmp_path, 1, 1, seed=1)
    folder = tmp_path / "dn-1" / adapter_id
    weights = folder / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:len(good) // 2])  # truncated on disk
    engine = make_engine(tmp_path)
    try:
        resolved = engine.resolve("dn-1")
        with pytest.raises(AdapterUnavailable, match=f"{adapter_id}: unreadable adapter_model.safetensors"):
            asyncio.run(engine.adapter(resolved))
        state = engine.cache.state()
        assert state.resident == 0 and state.counters["load_failures"] == 1 and adapter_id in engine.cache.last_error
        weights.write_bytes(good)  # repaired: the next request loads it
        assert asyncio.run(engine.adapter(resolved)).key == adapter_id
        assert engine.cache.state().resident == 1 and adapter_id not in engine.cache.last_error
    finally:
        engine.stop()


@pytest.mark.parametrize("damage", ["config", "shape", "nan"])
def test_malformed_peft_folders_are_refused(tmp_path, damage):
    from safetensors.torch import load_file, save_file

    adapter_id = write_adapter(tmp_path, 1, 1, seed=1)
    folder = tmp_path / "dn-1" / adapter_id
    engine = make_engine(tmp_path)
    engine.stop()
    if damage == "config":
        (folder / "adapter_config.json").write_text("{not json")
    else:
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        name = next(k for k in tensors if "lora_A" in k)
        tensors[name] = torch.zeros(8, 7) if damage == "shape" else tensors[name] * float("nan")
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterLoadError):
        load_peft_folder(folder, engine.shapes, adapter_id)


def test_a_slow_load_never_stalls_requests_for_resident_adapters(tmp_path):
    for datanet in (1, 2):
        write_adapter(tmp_path, datanet, 1, seed=datanet)
    engine = make_engine(tmp_path)
    release = threading.Event()
    real_load = engine.load

    def slow_load(entry):
        if entry.datanet_id == 2:
            assert release.wait(30)
        return real_load(entry)

    engine.load = slow_load

    async def main():
        await engine.adapter(engine.resolve("dn-1"))  # resident
        slow = asyncio.create_task(engine.prepare(GenerateRequest("r2", "dn-2", "hello", 4, temperature=0)))
        await asyncio.sleep(0.05)
        fast = await engine.prepare(GenerateRequest("r1", "dn-1", "hello", 8, temperature=0))
        deltas = [d async for d in engine.stream(fast)]  # completes while dn-2 is still loading
        assert deltas[-1].completion_tokens == 8 and not slow.done()
        release.set()
        prepared = await slow
        assert [d async for d in engine.stream(prepared)][-1].finish_reason in ("length", "stop")

    try:
        asyncio.run(main())
    finally:
        release.set()
        engine.stop()
    assert [e["request_id"] for e in engine.usage.events] == ["r1", "r2"]
