"""``attribute_usage``: decide every RAG answer on the usage log not yet decided, for the CLI and Dagster.

One run reads the whole usage topic (the answers already decided are read back from
``payable.usage.attribution`` first and left out), runs the Beam stage over the rest, and produces its
staged decisions keyed by usage event id. Every step is safe to repeat: a decision's id is derived from its
inputs, so a run that crashed after producing some of them and is run again writes the same ids, which
every consumer counts once (``weights.source_weights``), and a second complete run finds nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam

from payable import kafka_log
from payable.settings import Settings
from pipelines import log_views
from pipelines.context_attribution.methods import DEFAULT_METHOD, METHODS
from pipelines.context_attribution.stage import AttributeUsage
from pipelines.runners import pipeline_options
from pipelines.validate import staging
from schemas import topics
from schemas.context_attribution import CONTEXT_ATTRIBUTED, CONTEXT_ATTRIBUTION_SKIPPED
from schemas.usage import USAGE_EVENT


@dataclass
class UsageAttributionReport:
    """What one run decided: answers attributed, answers skipped by reason, answers decided before it."""

    method: str
    attributed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    already_decided: int = 0
    forward_passes: int = 0


@dataclass(frozen=True)
class Coverage:
    """The RAG answers on the usage log, and which of them are decided (attributed by the method, or skipped)."""

    answers: frozenset[str]
    attributed: dict[str, dict]  # usage event id -> its ContextAttributed event
    skipped: dict[str, dict]  # usage event id -> its ContextAttributionSkipped event

    @property
    def undecided(self) -> list[str]:
        return sorted(self.answers - self.attributed.keys() - self.skipped.keys())


def coverage(bootstrap: str, method: str = DEFAULT_METHOD) -> Coverage:
    """Reads both topics: what the Dagster check and the operators ask of the stage (invariant 5)."""
    usage = log_views.read_view(bootstrap, topics.USAGE)
    view = log_views.read_view(bootstrap, topics.USAGE_ATTRIBUTION)
    attributed = {e["usage_event_id"]: e for e in view.of(CONTEXT_ATTRIBUTED) if e["method"] == method}
    skipped = {e["usage_event_id"]: e for e in view.of(CONTEXT_ATTRIBUTION_SKIPPED)}
    return Coverage(frozenset(e["event_id"] for e in usage.of(USAGE_EVENT) if e["retrieved_sources"]),
                    attributed, skipped)


def attribute_usage(settings: Settings, method: str = DEFAULT_METHOD, *,
                    pipeline_args: list[str] | None = None) -> UsageAttributionReport:
    """Attributes every undecided RAG answer of the usage log with ``method`` and puts the decisions on the log."""
    if method not in METHODS:
        raise ValueError(f"unknown context-attribution method {method!r}; choose one of {sorted(METHODS)}")
    bootstrap = settings.kafka_bootstrap
    kafka_log.ensure_topics(bootstrap, [topics.USAGE, topics.USAGE_ATTRIBUTION])
    known = coverage(bootstrap, method)  # a skip holds whatever the method
    decided = frozenset(known.attributed.keys() | known.skipped.keys())
    ranges = {p: (0, end) for p, end in kafka_log.end_offsets(bootstrap, topics.USAGE).items() if end > 0}
    report = UsageAttributionReport(method, already_decided=len(decided))
    if not ranges:
        return report
    run_dir = _run_dir(settings, ranges, method, decided)
    shutil.rmtree(run_dir, ignore_errors=True)
    Path(run_dir).mkdir(parents=True)
    with beam.Pipeline(options=pipeline_options(settings, pipeline_args or [])) as pipeline:
        _ = pipeline | "AttributeUsage" >> AttributeUsage(settings, ranges, decided, method, run_dir)
    attributed, skipped = (_staged(run_dir, kind) for kind in ("attributed", "skipped"))
    _produce(bootstrap, attributed, skipped)
    report.attributed = len(attributed)
    report.skipped.update(r["reason"] for r in skipped)
    report.forward_passes = sum(r["forward_passes"] for r in attributed)
    shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _run_dir(settings: Settings, ranges: dict, method: str, decided: frozenset[str]) -> str:
    digest = hashlib.sha256(json.dumps([sorted(ranges.items()), method, sorted(decided)]).encode()).hexdigest()
    return str(settings.data_dir / "context_attribution" / "runs" / digest[:16])


def _staged(run_dir: str, kind: str) -> list[dict]:
    """The decisions of one kind, once each (two usage events with one id decide alike), in id order."""
    found = {Path(p).stem: staging.read_json(p) for p in staging.glob(staging.join(run_dir, kind, "*.json"))}
    return [found[k] for k in sorted(found)]


def _produce(bootstrap: str, attributed: list[dict], skipped: list[dict]) -> None:
    producer = kafka_log.make_producer(bootstrap)
    try:
        for event_type, batch in ((CONTEXT_ATTRIBUTED, attributed), (CONTEXT_ATTRIBUTION_SKIPPED, skipped)):
            if batch:
                kafka_log.produce(producer, event_type, batch, key=lambda r: r["usage_event_id"].encode())
        producer.flush()
    finally:
        producer.close()
