"""Rows of the usage_events and citations tables: the usage log, and each cited source with its weight.

A usage event is one served request; one re-sent after a broker outage has the same id and is kept once.
A RAG answer's citations are its retrieved sources in citation order ([1], [2], ...), each with the weight
the default context-attribution method gave it (``payable.usage.attribution``), or none yet; the usage
event says whether its answer was attributed, skipped (with the reason) or is still waiting.
"""

from __future__ import annotations

from pipelines.context_attribution.methods import DEFAULT_METHOD
from pipelines.log_views import LogView
from schemas.context_attribution import CONTEXT_ATTRIBUTED, CONTEXT_ATTRIBUTION_SKIPPED
from schemas.usage import USAGE_EVENT


def usage_tables(usage: LogView, attribution: LogView) -> tuple[list[dict], list[dict]]:
    """(usage_events rows, citations rows) from the usage and the context-attribution topics."""
    attributed = {e["usage_event_id"]: e for e in attribution.of(CONTEXT_ATTRIBUTED) if e["method"] == DEFAULT_METHOD}
    skipped = {e["usage_event_id"]: e for e in attribution.of(CONTEXT_ATTRIBUTION_SKIPPED)}
    events: dict[str, dict] = {}
    citations: list[dict] = []
    for partition, offset, event in usage.positioned(USAGE_EVENT):
        usage_id = event["event_id"]
        if usage_id in events:
            continue
        decision = attributed.get(usage_id)
        skip = skipped.get(usage_id) if decision is None else None
        status = ("attributed" if decision else "skipped" if skip else "pending") if event["retrieved_sources"] \
            else None
        events[usage_id] = {
            "usage_event_id": usage_id, "request_id": event["request_id"], "model": event["model"],
            "adapter_ids": event["adapter_ids"], "datanet_ids": event["datanet_ids"],
            "base_model_hash": event["base_model_hash"], "prompt_tokens": event["prompt_tokens"],
            "completion_tokens": event["completion_tokens"], "latency_ms": event["latency_ms"],
            "caller": event["caller"], "finish_reason": event["finish_reason"],
            "sources": len(event["retrieved_sources"]), "answer": event.get("answer"),
            "served_at_ms": event["served_at_ms"], "attribution": status,
            "attribution_reason": skip["reason"] if skip else None, "agent": event.get("agent"),
            "log_partition": partition, "log_offset": offset}
        weights = [s["weight"] for s in decision["sources"]] if decision else [None] * len(event["retrieved_sources"])
        for marker, (source, weight) in enumerate(zip(event["retrieved_sources"], weights, strict=True), start=1):
            citations.append({
                "usage_event_id": usage_id, "marker": marker, "contribution_id": source["contribution_id"],
                "datanet_id": source["datanet_id"], "contributor": source["contributor"].lower(),
                "chunk_id": source["chunk_id"], "dataset_version": source["dataset_version"],
                "retrieval_score": source["score"], "weight": weight,
                "attribution_event_id": decision["event_id"] if decision else None})
    return [events[k] for k in sorted(events)], citations
