"""``validate_new_offsets``: validate every chain fact not yet validated, for the CLI, demo and Dagster.

One run = one bounded set of offset ranges, in this order, each step safe to repeat:
1. record the intent (exact ranges) unless a crashed run's intent is there, then resume that one;
2. run the Beam pipeline over the ranges (deterministic, staged outputs);
3. produce the verdicts and dead letters to Kafka (skipped if the intent says they were produced);
4. commit one Lance version per changed datanet (skipped where the latest version has this run id);
5. advance the checkpoint atomically and drop the intent.
Rebuilding the dedupe history from the log is the same pipeline over offsets from zero, publishing nothing.
A history sketched under another normalization or MinHash shape (the checkpoint records its sketch
fingerprint) is rebuilt so before anything new is decided: new keys are never compared with old ones.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

from payable import kafka_log
from payable.content_store import ContentStore
from payable.settings import Settings
from pipelines.runners import pipeline_options
from pipelines.validate import checkpoint, materialize, staging
from pipelines.validate.checkpoint import Checkpoint, Intent
from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo
from pipelines.validate.pipeline import ValidateFacts
from schemas import events, topics
from schemas.verdicts import CONTRIBUTION_VERDICT

Ranges = dict[int, tuple[int, int]]


@dataclass
class DatanetReport:
    """One datanet's outcome: every contribution decided is counted once, accepted or by reason."""

    datanet_id: int
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    retracted_after_acceptance: int = 0
    replayed: int = 0
    lance_version: int | None = None

    @property
    def submitted(self) -> int:
        return self.accepted + sum(self.rejected.values())


@dataclass
class ValidateReport:
    """What ``validate_new_offsets`` did: offsets covered, per-datanet outcomes, dead letters, runs."""

    ranges: Ranges = field(default_factory=dict)
    datanets: dict[int, DatanetReport] = field(default_factory=dict)
    dead_letters: int = 0
    runs: list[str] = field(default_factory=list)
    resumed: bool = False
    rebuilt: bool = False  # the history was sketched differently and was rebuilt from the log first

    @property
    def submitted(self) -> int:
        return sum(report.submitted for report in self.datanets.values())


def validate_dir(settings: Settings) -> Path:
    return settings.data_dir / "validate"


def validate_new_offsets(settings: Settings, config: ValidateConfig | None = None, *,
                         pipeline_args: list[str] | None = None, max_offsets_per_run: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> ValidateReport:
    """Validates all chain facts past the checkpoint, in runs of at most ``max_offsets_per_run`` offsets
    per partition; ``progress(done, total)`` is called after each run with offsets processed so far."""
    config = config or ValidateConfig()
    root = validate_dir(settings)
    report = ValidateReport()
    with checkpoint.locked(root):
        kafka_log.ensure_topics(settings.kafka_bootstrap)
        ends = kafka_log.end_offsets(settings.kafka_bootstrap, topics.CHAIN_FACTS)
        if _stale_sketches(checkpoint.load(root), config):
            _rebuild(settings, config, root, pipeline_args or [])
            report.rebuilt = True
        total = _pending_offsets(checkpoint.load(root), ends, checkpoint.load_intent(root))
        done = 0
        while True:
            state, intent = checkpoint.load(root), checkpoint.load_intent(root)
            if intent is None:
                ranges = _next_ranges(state, ends, max_offsets_per_run)
                if not ranges:
                    break
                intent = Intent(checkpoint.run_id(ranges, config), ranges)
                checkpoint.save_intent(root, intent)
            else:
                report.resumed = True
            _run(settings, config, state, intent, pipeline_args or [], report)
            done += sum(hi - lo for lo, hi in intent.ranges.values())
            if progress:
                progress(done, max(total, done))
    return report


def rebuild_state(settings: Settings, config: ValidateConfig | None = None, *,
                  pipeline_args: list[str] | None = None) -> None:
    """Recomputes the dedupe history from the log alone: offsets zero..checkpoint, nothing published."""
    config = config or ValidateConfig()
    root = validate_dir(settings)
    with checkpoint.locked(root):
        _rebuild(settings, config, root, pipeline_args or [])


def _rebuild(settings: Settings, config: ValidateConfig, root: Path, pipeline_args: list[str]) -> None:
    state = checkpoint.load(root)
    ranges = {p: (0, end) for p, end in state.offsets.items() if end > 0}
    run_dir = str(root / "runs" / f"rebuild-{checkpoint.run_id(ranges, config)}")
    _pipeline(settings, config, Checkpoint(), ranges, run_dir, pipeline_args)
    segments = {d: [staging.join(run_dir, f"dn-{d}", "segment.arrow")] for d in _decided(run_dir)}
    checkpoint.save(root, Checkpoint(state.offsets, _datanets(run_dir), segments, config.sketch_fingerprint))


def _stale_sketches(state: Checkpoint, config: ValidateConfig) -> bool:
    """History exists but was sketched under another normalization or MinHash shape (or before it was recorded)."""
    return bool(state.segments) and state.sketches != config.sketch_fingerprint


def _pending_offsets(state: Checkpoint, ends: dict[int, int], intent: Intent | None) -> int:
    pending = sum(max(0, end - state.offsets.get(p, 0)) for p, end in ends.items())
    return pending if intent is None else max(pending, sum(hi - lo for lo, hi in intent.ranges.values()))


def _next_ranges(state: Checkpoint, ends: dict[int, int], limit: int | None) -> Ranges:
    ranges = {}
    for partition, end in sorted(ends.items()):
        start = state.offsets.get(partition, 0)
        if end > start:
            ranges[partition] = (start, end if limit is None else min(end, start + limit))
    return ranges


def _pipeline(settings: Settings, config: ValidateConfig, state: Checkpoint, ranges: Ranges, run_dir: str,
              pipeline_args: list[str]) -> None:
    shutil.rmtree(run_dir, ignore_errors=True)
    Path(run_dir).mkdir(parents=True)
    with beam.Pipeline(options=pipeline_options(settings, pipeline_args)) as pipeline:
        _ = pipeline | "Validate" >> ValidateFacts(
            bootstrap=settings.kafka_bootstrap, ranges=ranges, known=state.datanets, segments=state.segments,
            store=ContentStore(settings.content_dir), run_dir=run_dir, config=config)


def _run(settings: Settings, config: ValidateConfig, state: Checkpoint, intent: Intent, pipeline_args: list[str],
         report: ValidateReport) -> None:
    root = validate_dir(settings)
    run_dir = str(root / "runs" / intent.run_id)
    _pipeline(settings, config, state, intent.ranges, run_dir, pipeline_args)
    decided = _decided(run_dir)
    dead = [entry for path in staging.glob(staging.join(run_dir, "dead", "*.json"))
            for entry in staging.read_json(path)]
    outputs = {d: _staged(run_dir, d) for d in decided}
    if not intent.produced:
        _produce(settings, outputs, dead)
        intent.produced = True
        checkpoint.save_intent(root, intent)
    for datanet_id, (_, rows, decision) in outputs.items():
        version = materialize.commit(materialize.dataset_uri(settings.lance_dir, datanet_id), rows,
                                     decision["removed"], run_id=intent.run_id, offsets=intent.ranges)
        _count(report.datanets.setdefault(datanet_id, DatanetReport(datanet_id)), decision, version)
    datanets = _datanets(run_dir)
    segments = {d: list(paths) for d, paths in state.segments.items()}
    for datanet_id in decided:
        segments.setdefault(datanet_id, []).append(staging.join(run_dir, f"dn-{datanet_id}", "segment.arrow"))
    offsets = dict(state.offsets) | {p: hi for p, (_, hi) in intent.ranges.items()}
    checkpoint.save(root, Checkpoint(offsets, state.datanets | datanets, segments, config.sketch_fingerprint))
    checkpoint.clear_intent(root)
    for partition, (lo, hi) in intent.ranges.items():
        start = report.ranges.get(partition, (lo, hi))[0]
        report.ranges[partition] = (start, hi)
    report.dead_letters += len(dead)
    report.runs.append(intent.run_id)


def _decided(run_dir: str) -> list[int]:
    """Datanets the run decided something for: one staged folder each, complete once the pipeline ended."""
    paths = staging.glob(staging.join(run_dir, "dn-*", "decision.json"))
    return sorted(int(Path(path).parent.name.removeprefix("dn-")) for path in paths)


def _datanets(run_dir: str) -> dict[int, DatanetInfo]:
    infos = [DatanetInfo.from_json(staging.read_json(p)) for p in staging.glob(staging.join(run_dir, "datanets", "*"))]
    return {info.datanet_id: info for info in infos}


def _staged(run_dir: str, datanet_id: int) -> tuple[list[dict], pa.Table, dict]:
    """(verdicts, Lance rows, decision summary) the pipeline staged for one datanet."""
    out = staging.join(run_dir, f"dn-{datanet_id}")
    return (staging.read_table(staging.join(out, "verdicts.arrow")).to_pylist(),
            staging.read_table(staging.join(out, "rows.arrow")), staging.read_json(staging.join(out, "decision.json")))


def _produce(settings: Settings, outputs: dict, dead: list) -> None:
    """Verdicts keyed by datanet (so they stay in chain order), dead letters keyed as their source was."""
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    try:
        for datanet_id, (verdicts, *_) in outputs.items():
            if verdicts:
                kafka_log.produce(producer, CONTRIBUTION_VERDICT, verdicts, key=lambda _r, d=datanet_id:
                                  topics.datanet_key(d))
        if dead:
            kafka_log.produce(producer, events.DEAD_LETTER, [record for _, record in dead],
                              key=_dead_letter_key(dead), topic=topics.VERDICTS_DLQ)
        producer.flush()
    finally:
        producer.close()


def _dead_letter_key(dead: list) -> Callable[[dict], bytes]:
    keys = {record["event_id"]: bytes.fromhex(key) for key, record in dead}
    return lambda record: keys[record["event_id"]] or b"unknown"


def _count(report: DatanetReport, decision: dict, version: int | None) -> None:
    report.accepted += decision["accepted"]
    report.rejected.update(decision["rejected"])
    report.retracted_after_acceptance += decision["retracted_after_acceptance"]
    report.replayed += decision["replayed"]
    if version is not None:
        report.lance_version = version
