"""Deciding one datanet's contributions in chain order against its whole history.

The first contribution in chain order wins: a later one is rejected as a duplicate of the earliest
still-live accepted contribution with the same content hash, the same normalized-text hash, or a
normalized word-shingle Jaccard >= the threshold (MinHash LSH proposes candidates, the exact Jaccard
decides). Retractions take effect at their own position in the log, so processing a range in one run
or in many runs yields the same decisions, which is what makes replay from offset zero reproduce them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines.validate import reasons
from pipelines.validate.config import ValidateConfig
from pipelines.validate.facts import fact_key
from pipelines.validate.sketch import jaccard
from pipelines.validate.state import ACCEPTED, REJECTED, RETRACTED, STATE, DedupeState
from pipelines.validate.verdict import make_verdict
from schemas.datasets import CONTRIBUTION_ROW


@dataclass
class Decision:
    """What one run decided for one datanet."""

    verdicts: list[dict] = field(default_factory=list)
    rows: pa.Table = field(default_factory=CONTRIBUTION_ROW.empty_table)  # accepted now, still live
    removed: list[str] = field(default_factory=list)  # verdict ids of earlier rows now retracted
    segment: pa.Table = field(default_factory=STATE.empty_table)  # history rows this run adds
    replayed: int = 0  # facts seen before (same event id and block hash): nothing changes
    accepted: int = 0  # facts first decided in this run, by their state at the end of it
    rejected: Counter = field(default_factory=Counter)  # reason -> count, same facts
    retracted_after_acceptance: int = 0  # facts accepted in earlier runs, retracted in this one


class _Run:
    """The mutable part of one datanet's decision: history plus what this run accepted so far."""

    def __init__(self, history: DedupeState, candidates: pa.Table, config: ValidateConfig):
        self.history, self.candidates, self.config = history, candidates, config
        self.facts = candidates.drop_columns(["text", "shingles", "band_keys"]).to_pylist()
        self.shingle_offsets = candidates.column("shingles").combine_chunks().offsets.to_numpy()
        self.shingle_values = candidates.column("shingles").combine_chunks().values.to_numpy()
        self.seen, self.retracted = set(history.seen), set(history.retracted)
        self.live = set(history.live)
        self.by_content, self.by_norm = dict(history.by_content), dict(history.by_norm)
        self.ordinal_of = dict(history.ordinal_of)
        self.accepted_rows: dict[int, dict] = {}  # candidate index -> its accepted verdict
        self.outcome: dict[int, str | None] = {}  # candidate index -> reason (None = accepted), latest
        self.decision = Decision()
        self.state_rows: list[tuple[int | None, dict, str, str | None]] = []  # (candidate, fact, status, verdict)

    def shingles(self, ordinal: int) -> np.ndarray:
        if ordinal < len(self.history):
            return self.history.shingles(ordinal)
        i = ordinal - len(self.history)
        return self.shingle_values[self.shingle_offsets[i]:self.shingle_offsets[i + 1]]

    def contribution_id(self, ordinal: int) -> int:
        if ordinal < len(self.history):
            return self.history.contribution_ids[ordinal]
        return self.facts[ordinal - len(self.history)]["contribution_id"]

    def entry(self, ordinal: int) -> dict:
        if ordinal < len(self.history):
            return self.history.entries.slice(ordinal, 1).drop_columns(["shingles", "band_keys"]).to_pylist()[0]
        return self.facts[ordinal - len(self.history)] | {"verdict_id": self.accepted_rows[ordinal - len(self.history)]
                                                          ["verdict_id"]}

    def decide(self, i: int, partners: list[int]) -> None:
        fact = self.facts[i]
        key = fact_key(fact["event_id"], fact["block_hash"])
        if key in self.seen:
            self.decision.replayed += 1
            return
        self.seen.add(key)
        reason, detail, duplicate_of, similarity = fact["reason"], fact["detail"], None, None
        if key in self.retracted:
            reason, detail = reasons.RETRACTED, "the chain retracted this fact before it was decided"
        elif reason is None:
            reason, detail, duplicate_of, similarity = self.duplicate(i, partners)
        verdict = make_verdict(fact, reason, detail, self.config, duplicate_of=duplicate_of, similarity=similarity)
        self.decision.verdicts.append(verdict)
        self.outcome[i] = reason
        if reason is None:
            ordinal = len(self.history) + i
            self.live.add(ordinal)
            self.ordinal_of[key] = ordinal
            self.by_content.setdefault(fact["content_hash"], ordinal)
            self.by_norm.setdefault(fact["norm_hash"], ordinal)
            self.accepted_rows[i] = verdict
        self.state_rows.append((i, fact, ACCEPTED if reason is None else REJECTED, verdict["verdict_id"]))

    def duplicate(self, i: int, partners: list[int]) -> tuple[str | None, str, int | None, float | None]:
        """(reason, detail, duplicate_of, similarity) against live accepted entries; reason None = new."""
        fact = self.facts[i]
        for reason, index, value in ((reasons.DUPLICATE, self.by_content, fact["content_hash"]),
                                     (reasons.DUPLICATE_NORMALIZED, self.by_norm, fact["norm_hash"])):
            ordinal = index.get(value)
            if ordinal is not None and ordinal in self.live:
                original = self.contribution_id(ordinal)
                return reason, f"duplicate_of={original}", original, 1.0
        mine = self.shingles(len(self.history) + i) if partners else None
        for ordinal in partners:
            if ordinal not in self.live:
                continue
            similarity = jaccard(mine, self.shingles(ordinal))
            if similarity >= self.config.near_threshold:
                original = self.contribution_id(ordinal)
                return (reasons.NEAR_DUPLICATE, f"duplicate_of={original} jaccard={similarity:.3f}", original,
                        similarity)
        return None, "", None, None

    def retract(self, retraction: dict) -> None:
        key = fact_key(retraction["retracted_event_id"], retraction["retracted_block_hash"])
        if key in self.retracted:
            return
        self.retracted.add(key)
        ordinal = self.ordinal_of.get(key)
        tombstone = {"event_id": retraction["retracted_event_id"], "block_hash": retraction["retracted_block_hash"],
                     "contribution_id": retraction["contribution_id"], "datanet_id": retraction["datanet_id"]}
        self.state_rows.append((None, tombstone, RETRACTED, None))
        if ordinal is None or ordinal not in self.live:
            return
        self.live.discard(ordinal)
        entry = self.entry(ordinal)
        for index, value in ((self.by_content, entry["content_hash"]), (self.by_norm, entry["norm_hash"])):
            if index.get(value) == ordinal:
                del index[value]
        position = {"partition": retraction["_partition"], "offset": retraction["_offset"]}
        self.decision.verdicts.append(make_verdict(entry | position, reasons.RETRACTED,
                                                   f"retracted by {retraction['event_id']}", self.config))
        if ordinal < len(self.history):
            self.decision.removed.append(entry["verdict_id"])
            self.decision.retracted_after_acceptance += 1
        else:
            del self.accepted_rows[ordinal - len(self.history)]
            self.outcome[ordinal - len(self.history)] = reasons.RETRACTED


def decide_datanet(history: DedupeState, candidates: pa.Table, retractions: list[dict],
                   config: ValidateConfig) -> Decision:
    """Decides every candidate and applies every retraction of one datanet, in log order."""
    candidates = candidates.sort_by([("partition", "ascending"), ("offset", "ascending")])
    run = _Run(history, candidates, config)
    partners = _partners(history, candidates)
    events = [((fact["partition"], fact["offset"]), 0, i) for i, fact in enumerate(run.facts)]
    events += [((r["_partition"], r["_offset"]), 1, j) for j, r in enumerate(retractions)]
    for _, kind, index in sorted(events):
        if kind == 0:
            run.decide(index, partners[index])
        else:
            run.retract(retractions[index])
    decision = run.decision
    decision.accepted = sum(reason is None for reason in run.outcome.values())
    decision.rejected = Counter(reason for reason in run.outcome.values() if reason is not None)
    decision.rows = _rows(candidates, run.accepted_rows)
    decision.segment = _segment(candidates, run.state_rows)
    return decision


def _partners(history: DedupeState, candidates: pa.Table) -> list[list[int]]:
    """Per candidate, the ordinals (history first, then earlier candidates) sharing an LSH band with it."""
    n, offset = len(candidates), len(history)
    found: list[list[int]] = [[] for _ in range(n)]
    column = candidates.column("band_keys").combine_chunks()
    counts = np.diff(column.offsets.to_numpy())
    valid = np.flatnonzero(counts)
    if valid.size == 0:
        return found
    keys = column.values.to_numpy().reshape(valid.size, -1)
    for i, ordinals in zip(valid.tolist(), history.lsh_partners(keys), strict=True):
        found[i] = ordinals.tolist()
    rows = np.repeat(valid, keys.shape[1])
    flat = keys.ravel()
    order = np.lexsort((rows, flat))
    flat, rows = flat[order], rows[order]
    same = flat[1:] == flat[:-1]
    group = np.cumsum(np.concatenate([[True], ~same])) - 1
    group_start = np.flatnonzero(np.concatenate([[True], ~same]))[group]
    before = np.arange(flat.size) - group_start  # how many earlier members share this key
    later = np.repeat(rows, before)
    first = np.repeat(group_start, before)
    earlier = rows[first + np.arange(later.size) - np.repeat(np.cumsum(before) - before, before)]
    pairs = np.unique(later.astype(np.int64) * n + earlier)  # by later, then earlier ascending
    for i, j in zip((pairs // n).tolist(), (pairs % n + offset).tolist(), strict=True):
        found[i].append(j)
    return found


def _rows(candidates: pa.Table, accepted: dict[int, dict]) -> pa.Table:
    """CONTRIBUTION_ROW rows of the candidates accepted (and not retracted) in this run."""
    order = sorted(accepted)
    taken = candidates.drop_columns(["shingles", "band_keys"]).take(pa.array(order, type=pa.int64()))
    columns = {name: taken.column(name) for name in CONTRIBUTION_ROW.names if name in taken.column_names}
    columns["fact_event_id"] = taken.column("event_id")
    columns["verdict_id"] = pa.array([accepted[i]["verdict_id"] for i in order], type=pa.string())
    return pa.table([columns[name] for name in CONTRIBUTION_ROW.names], schema=CONTRIBUTION_ROW)


def _segment(candidates: pa.Table, state_rows: list[tuple[int | None, dict, str, str | None]]) -> pa.Table:
    """The STATE rows of this run: decided candidates (sketches kept for accepted ones), tombstones."""
    parts = []
    for status in (ACCEPTED, REJECTED):
        picked = [(i, verdict) for i, _, row_status, verdict in state_rows if row_status == status]
        source = candidates if status == ACCEPTED else candidates.drop_columns(["text", "shingles", "band_keys"])
        taken = source.take(pa.array([i for i, _ in picked], type=pa.int64()))
        columns = {name: taken.column(name) for name in STATE.names if name in taken.column_names}
        columns["fact_key"] = pa.array([fact_key(e, b) for e, b in zip(taken.column("event_id").to_pylist(),
                                                                       taken.column("block_hash").to_pylist(),
                                                                       strict=True)], type=pa.string())
        columns["status"] = pa.array([status] * len(picked), type=pa.string())
        columns["verdict_id"] = pa.array([verdict for _, verdict in picked], type=pa.string())
        if status == REJECTED:
            empty = pa.array([[]] * len(picked), type=pa.list_(pa.uint64()))
            columns["shingles"] = columns["band_keys"] = empty
        parts.append(pa.table([columns[name] for name in STATE.names], schema=STATE))
    tombstones = [fact | {"fact_key": fact_key(fact["event_id"], fact["block_hash"]), "status": RETRACTED,
                          "shingles": [], "band_keys": []}
                  for _, fact, status, _ in state_rows if status == RETRACTED]
    parts.append(pa.Table.from_pylist(tombstones, schema=STATE))
    return pa.concat_tables(parts)
