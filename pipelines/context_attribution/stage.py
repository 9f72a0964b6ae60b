"""Context attribution of the usage log as a Beam pipeline: RAG answers in, one decision per answer out.

Runner-agnostic like the validate stage: bounded offset ranges of ``payable.usage`` read with kafka-python,
a ``DoFn`` that loads the served base model once per worker (``setup``) and keeps the merged models of the
adapters it meets, and outputs staged as files through Beam's FileSystems for the driver to put on the log.
Per answer: rebuild the shown sources from their dataset versions, rescore the answer under the default
method's ablations, and emit its normalized weights; an answer that cannot be rescored (no transcript, an
unknown adapter or base model, a chunk its dataset version does not hold) becomes a skip with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam

from payable import kafka_log
from payable.settings import Settings
from pipelines.context_attribution import reasons, records
from pipelines.context_attribution.methods import attribute
from pipelines.context_attribution.served import ContextExceeded, ServedModels, UnknownAdapter, UnknownBaseModel
from pipelines.context_attribution.sources import ChunkTexts, UnknownChunk
from pipelines.validate import staging
from pipelines.validate.pipeline import split_ranges
from schemas import events, topics
from schemas.usage import USAGE_EVENT

Range = tuple[int, int, int]  # (partition, start offset, end offset)


def read_answers(chunk: Range, bootstrap: str, decided: frozenset[str]) -> Iterable[dict]:
    """The RAG answers (usage events with retrieved sources) of one chunk of offsets not yet decided."""
    partition, start, end = chunk
    for message in kafka_log.read_range(bootstrap, topics.USAGE, partition, start, end):
        try:
            event_type, event = events.decode(message.value, message.headers)
        except events.SchemaError:
            continue  # serving validates what it writes; the usage rewards account for the log as a whole
        if event_type.name == USAGE_EVENT.name and event["retrieved_sources"] and event["event_id"] not in decided:
            yield event


def triage(event: dict) -> tuple[str, str] | None:
    """(reason, detail) when the event lacks what rescoring needs, before any model is touched."""
    if not event.get("messages") or not event.get("answer") or event.get("source_words") is None:
        return reasons.NO_TRANSCRIPT, (f"UsageEvent v{2 if 'answer' in event else 1} without the messages, answer "
                                       "and shown words that rescoring needs")
    return None


class AttributeAnswer(beam.DoFn):
    """One RAG answer -> its ContextAttributed record, or a ContextAttributionSkipped one with the reason."""

    def __init__(self, settings: Settings, method: str):
        self.settings, self.method = settings, method

    def setup(self) -> None:
        self.models = ServedModels(self.settings.adapters_dir)  # each answer's base, resolved from its hash
        self.texts = ChunkTexts(str(self.settings.lance_dir))

    def process(self, event: dict) -> Iterable[tuple[str, dict]]:
        skip = triage(event)
        if skip is None:
            try:
                texts = self.texts.shown(event["retrieved_sources"], event["source_words"])
                scorer = self.models.scorer(event, texts)
            except UnknownAdapter as exc:
                skip = reasons.UNKNOWN_ADAPTER, str(exc)
            except UnknownBaseModel as exc:
                skip = reasons.UNKNOWN_BASE_MODEL, str(exc)
            except UnknownChunk as exc:
                skip = reasons.UNKNOWN_CHUNK, str(exc)
            except ContextExceeded as exc:
                skip = reasons.CONTEXT_EXCEEDED, str(exc)
        if skip is not None:
            yield "skipped", records.skipped(event["event_id"], *skip)
            return
        result = attribute(scorer, len(texts), self.method)
        yield "attributed", records.attributed(event, self.method, result.weights.tolist(), result.forward_passes)


def stage_decision(decision: tuple[str, dict], run_dir: str) -> None:
    """One JSON file per decision, named by its derived id (a retried bundle rewrites the same file)."""
    kind, record = decision
    staging.write_json(staging.join(run_dir, kind, f"{record['event_id']}.json"), record)


class AttributeUsage(beam.PTransform):
    """The whole stage: usage offsets -> RAG answers not yet decided -> staged decisions."""

    def __init__(self, settings: Settings, ranges: dict[int, tuple[int, int]], decided: frozenset[str],
                 method: str, run_dir: str, chunk_offsets: int = 200):
        super().__init__()
        self.settings, self.ranges, self.decided, self.method = settings, ranges, decided, method
        self.run_dir, self.chunk_offsets = run_dir, chunk_offsets

    def expand(self, pbegin):
        return (pbegin
                | "OffsetChunks" >> beam.Create(split_ranges(self.ranges, self.chunk_offsets))
                | "SpreadChunks" >> beam.Reshuffle()
                | "ReadAnswers" >> beam.FlatMap(read_answers, self.settings.kafka_bootstrap, self.decided)
                | "SpreadAnswers" >> beam.Reshuffle()
                | "Attribute" >> beam.ParDo(AttributeAnswer(self.settings, self.method))
                | "Stage" >> beam.Map(stage_decision, self.run_dir))
