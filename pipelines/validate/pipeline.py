"""The validate stage as a Beam pipeline: named composite transforms that read like the diagram.

Runner-agnostic: it reads bounded offset ranges with kafka-python (no KafkaIO), moves Arrow batches
(not one Python object per contribution), and writes its outputs through Beam's FileSystems, so the
runner (FnApiRunner in-process or multi-process, Flink, Spark, Dataflow) is chosen by options alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
import pyarrow as pa

from payable import kafka_log
from payable.content_store import ContentStore
from pipelines.validate import staging
from pipelines.validate.candidates import CANDIDATE, by_datanet, check_chunk
from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo, earliest, resolve
from pipelines.validate.dedupe import decide_datanet
from pipelines.validate.facts import FactChunk, decode_messages
from pipelines.validate.state import STATE, DedupeState
from schemas import topics
from schemas.verdicts import CONTRIBUTION_VERDICT

Range = tuple[int, int, int]  # (partition, start offset, end offset)


def split_ranges(ranges: dict[int, tuple[int, int]], chunk: int) -> list[Range]:
    """Offset ranges cut into chunks of at most ``chunk`` offsets: the unit of parallel reading."""
    return [(partition, lo, min(lo + chunk, end)) for partition, (start, end) in sorted(ranges.items())
            for lo in range(start, end, chunk)]


def read_chunk(chunk: Range, bootstrap: str, topic: str) -> FactChunk:
    partition, start, end = chunk
    return decode_messages(kafka_log.read_range(bootstrap, topic, partition, start, end))


class ReadFacts(beam.PTransform):
    """Bounded offset ranges of the chain-facts topic -> one decoded FactChunk per chunk of offsets."""

    def __init__(self, bootstrap: str, ranges: dict[int, tuple[int, int]], chunk_offsets: int):
        super().__init__()
        self.bootstrap, self.ranges, self.chunk_offsets = bootstrap, ranges, chunk_offsets

    def expand(self, pbegin):
        return (pbegin
                | "OffsetChunks" >> beam.Create(split_ranges(self.ranges, self.chunk_offsets))
                | "Spread" >> beam.Reshuffle()
                | "ReadAndDecode" >> beam.Map(read_chunk, self.bootstrap, topics.CHAIN_FACTS))


class ResolveDatanets(beam.PTransform):
    """DatanetCreated facts, plus datanets known from earlier runs -> (datanet id, DatanetInfo)."""

    def __init__(self, known: dict[int, DatanetInfo], store: ContentStore):
        super().__init__()
        self.known, self.store = known, store

    def expand(self, chunks):
        created = (chunks
                   | "CreatedFacts" >> beam.FlatMap(lambda chunk: chunk.created)
                   | "FetchSpec" >> beam.Map(resolve, self.store))
        known = chunks.pipeline | "KnownDatanets" >> beam.Create(list(self.known.values()))
        return ((created, known)
                | "AllDatanets" >> beam.Flatten()
                | "ById" >> beam.Map(lambda info: (info.datanet_id, info))
                | "FirstCreation" >> beam.CombinePerKey(lambda infos: earliest(list(infos))))


def _checked(chunk: FactChunk, datanets: dict[int, DatanetInfo], store: ContentStore,
             config: ValidateConfig) -> Iterable[tuple[int, tuple[str, object]]]:
    if chunk.submissions:
        batch = check_chunk(chunk.submissions, datanets, store, config)
        for datanet_id, part in by_datanet(batch):
            yield datanet_id, ("candidates", part)
    for retraction in chunk.retractions:
        if retraction["datanet_id"] is not None:
            yield retraction["datanet_id"], ("retraction", retraction)


class CheckAndSketch(beam.PTransform):
    """Per chunk: every per-contribution rule, then normalization + MinHash of the passing texts."""

    def __init__(self, datanets, store: ContentStore, config: ValidateConfig):
        super().__init__()
        self.datanets, self.store, self.config = datanets, store, config

    def expand(self, chunks):
        return chunks | "Check" >> beam.FlatMap(_checked, beam.pvalue.AsDict(self.datanets), self.store,
                                                self.config)


class _Decide(beam.DoFn):
    """One datanet's events of this run, decided against its history; outputs staged as files."""

    def __init__(self, segments: dict[int, list[str]], run_dir: str, config: ValidateConfig):
        self.segments, self.run_dir, self.config = segments, run_dir, config

    def process(self, element):
        datanet_id, tagged = element
        batches = [payload for tag, payload in tagged if tag == "candidates"]
        retractions = [payload for tag, payload in tagged if tag == "retraction"]
        paths = self.segments.get(datanet_id, [])
        history = DedupeState(pa.concat_tables([staging.read_table(p) for p in paths]) if paths else None)
        candidates = pa.Table.from_batches(batches, schema=CANDIDATE)
        decision = decide_datanet(history, candidates, retractions, self.config)
        out = staging.join(self.run_dir, f"dn-{datanet_id}")
        staging.write_table(staging.join(out, "verdicts.arrow"),
                            pa.Table.from_pylist(decision.verdicts, schema=CONTRIBUTION_VERDICT.schema))
        staging.write_table(staging.join(out, "rows.arrow"), decision.rows)
        staging.write_table(staging.join(out, "segment.arrow"), decision.segment.cast(STATE))
        staging.write_json(staging.join(out, "decision.json"), {
            "removed": decision.removed, "replayed": decision.replayed, "accepted": decision.accepted,
            "rejected": dict(decision.rejected), "retracted_after_acceptance": decision.retracted_after_acceptance})
        yield datanet_id


class DecidePerDatanet(beam.PTransform):
    """Checked chunks and retractions grouped by datanet, decided in chain order against history."""

    def __init__(self, segments: dict[int, list[str]], run_dir: str, config: ValidateConfig):
        super().__init__()
        self.segments, self.run_dir, self.config = segments, run_dir, config

    def expand(self, keyed):
        return (keyed
                | "ByDatanet" >> beam.GroupByKey()
                | "Decide" >> beam.ParDo(_Decide(self.segments, self.run_dir, self.config)))


def stage_dead_letters(chunk: FactChunk, run_dir: str) -> None:
    """One JSON file per chunk with dead letters, named by its first one (deterministic)."""
    if chunk.dead_letters:
        records = [[key.hex(), record] for key, record in chunk.dead_letters]
        staging.write_json(staging.join(run_dir, "dead", f"{records[0][1]['event_id']}.json"), records)


def stage_datanet(item: tuple[int, DatanetInfo], run_dir: str) -> None:
    staging.write_json(staging.join(run_dir, "datanets", f"dn-{item[0]}.json"), item[1].to_json())


class ValidateFacts(beam.PTransform):
    """The whole stage: chain facts of the given offset ranges -> staged verdicts, rows and history."""

    def __init__(self, *, bootstrap: str, ranges: dict[int, tuple[int, int]], known: dict[int, DatanetInfo],
                 segments: dict[int, list[str]], store: ContentStore, run_dir: str, config: ValidateConfig):
        super().__init__()
        self.bootstrap, self.ranges, self.known, self.segments = bootstrap, ranges, known, segments
        self.store, self.run_dir, self.config = store, run_dir, config

    def expand(self, pbegin):
        chunks = pbegin | "ReadFacts" >> ReadFacts(self.bootstrap, self.ranges, self.config.chunk_offsets)
        datanets = chunks | "ResolveDatanets" >> ResolveDatanets(self.known, self.store)
        keyed = chunks | "CheckAndSketch" >> CheckAndSketch(datanets, self.store, self.config)
        decided = keyed | "DecidePerDatanet" >> DecidePerDatanet(self.segments, self.run_dir, self.config)
        _ = chunks | "StageDeadLetters" >> beam.Map(stage_dead_letters, self.run_dir)
        _ = datanets | "StageDatanets" >> beam.Map(stage_datanet, self.run_dir)
        return decided
