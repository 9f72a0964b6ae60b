"""GET /metrics: the adapter cache, the batcher, the usage writer and the serving agent in Prometheus' text format
(0.0.4). The agent's address is the one label (``payable_serve_agent_info{address="0x..."} 1``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from serving.engine import Engine
from serving.usage import UsageWriter

router = APIRouter()
PREFIX = "payable_serve_"


def samples(engine: Engine, usage: UsageWriter | None) -> list[tuple[str, str, str, float]]:
    """(name, type, help, value) of every metric, read from the live objects."""
    cache = engine.cache.state()
    c = cache.counters
    stats = engine.batcher.stats
    rows = [
        ("adapter_cache_hits_total", "counter", "Requests whose adapter was resident.", c["hits"]),
        ("adapter_cache_misses_total", "counter", "Adapters loaded on demand.", c["misses"]),
        ("adapter_cache_evictions_total", "counter", "Adapters evicted to respect the bounds.", c["evictions"]),
        ("adapter_cache_load_failures_total", "counter", "Adapter loads refused (corrupt or foreign files).",
         c["load_failures"]),
        ("adapter_cache_load_seconds_total", "counter", "Time spent loading adapters.", c["load_seconds_total"]),
        ("adapter_cache_resident", "gauge", "Adapters (and merged ensembles) in the cache.", cache.resident),
        ("adapter_cache_resident_bytes", "gauge", "Bytes of LoRA factors in the cache.", cache.resident_bytes),
        ("adapter_cache_pinned", "gauge", "Pinned resident adapters.", cache.pinned),
        ("adapter_cache_max_adapters", "gauge", "Count bound of the cache.", cache.max_adapters),
        ("adapter_cache_max_bytes", "gauge", "Byte bound of the cache.", cache.max_bytes),
        ("batch_running", "gauge", "Requests in the running batch.", engine.batcher.running),
        ("batch_waiting", "gauge", "Requests waiting for a batch row.", engine.batcher.waiting),
        ("batch_lora_slots_in_use", "gauge", "Distinct adapters in the running batch.", engine.slots.resident),
        ("batch_decode_steps_total", "counter", "Decode forward passes.", stats.steps),
        ("batch_prefills_total", "counter", "Prefill forward passes.", stats.prefills),
        ("batch_rows_stepped_total", "counter", "Rows over all decode steps (mean batch = rows / steps).",
         stats.rows_stepped),
        ("tokens_generated_total", "counter", "Completion tokens generated.", stats.tokens),
        ("batch_step_errors_total", "counter", "Batch steps that failed (their requests ended in error).",
         stats.errors),
    ]
    if usage is not None:
        u = usage.state()
        rows += [
            ("usage_events_recorded_total", "counter", "Usage events recorded (one per finished request).",
             u["recorded"]),
            ("usage_events_delivered_total", "counter", "Usage events acknowledged by Kafka.", u["delivered"]),
            ("usage_events_pending", "gauge", "Usage events buffered, not yet acknowledged.", u["pending"]),
            ("usage_send_failures_total", "counter", "Failed deliveries to Kafka (events kept and retried).",
             u["send_failures"]),
        ]
        if usage.agent is not None:
            staked = usage.agent.staked()
            rows += [
                (f'agent_info{{address="{usage.agent.address}"}}', "gauge", "The agent signing the usage events.",
                 1),
                ("agent_staked", "gauge", "1: the AgentRegistry lists the agent; 0: it does not (its usage is not "
                 "paid); -1: unknown (no registry, or the chain does not answer).", -1 if staked is None else staked),
            ]
    return [(PREFIX + name, kind, text, float(value)) for name, kind, text, value in rows]


def render(engine: Engine, usage: UsageWriter | None) -> str:
    lines = []
    for name, kind, text, value in samples(engine, usage):
        family = name.partition("{")[0]
        lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", f"{name} {value:g}"]
    return "\n".join(lines) + "\n"


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    usage = request.app.state.usage
    if usage is not None and usage.agent is not None:
        await asyncio.to_thread(usage.agent.staked)  # a chain read (cached): off the event loop
    return PlainTextResponse(render(request.app.state.engine, usage), media_type="text/plain; version=0.0.4")
