"""One chunk of submissions checked and sketched: the columnar batch that flows to deduplication.

Everything here is independent per contribution (rules) or per chunk (sketches), so it runs in
parallel on any number of workers; only deduplication, which needs chain order, runs per datanet.
A batch is one Arrow record batch, so moving it between workers is a buffer copy, not per-row pickling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from payable.content_store import ContentStore
from pipelines.validate import rules
from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo
from pipelines.validate.sketch import sketch
from schemas import events

# The ContributionSubmitted fields a candidate carries: a projection of the event's schema, so they cannot drift.
FACT_COLUMNS = [events.CONTRIBUTION_SUBMITTED.schema.field(name) for name in (
    "event_id", "block_hash", "chain_id", "block_number", "contribution_id", "datanet_id", "contributor",
    "content_hash", "size")]
CANDIDATE = pa.schema([
    *FACT_COLUMNS,
    pa.field("partition", pa.int64(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=True),  # None: passed every per-contribution rule
    pa.field("detail", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=True),
    pa.field("norm_hash", pa.string(), nullable=True),
    pa.field("shingles", pa.list_(pa.uint64()), nullable=False),  # empty unless passed
    pa.field("band_keys", pa.list_(pa.uint64()), nullable=False),  # empty unless passed
])


def check_chunk(submissions: Sequence[dict], datanets: Mapping[int, DatanetInfo], store: ContentStore,
                config: ValidateConfig) -> pa.RecordBatch:
    """Rules for each submission, then sketches of the passing texts, as one CANDIDATE batch."""
    checked = [rules.check_submission(fact, datanets.get(fact["datanet_id"]), store, config.max_size_cap)
               for fact in submissions]
    passed = [i for i, result in enumerate(checked) if result.reason is None]
    sketches = sketch([checked[i].text for i in passed], config)
    for position, i in enumerate(passed):
        words = rules.check_words(int(sketches.word_counts[position]), config.min_words)
        if words.reason:
            checked[i] = rules.Checked(words.reason, words.detail, None)
    kept = np.array([checked[i].reason is None for i in passed], dtype=bool)

    n = len(submissions)
    norm_hashes: list[str | None] = [None] * n
    shingle_counts = np.zeros(n, dtype=np.int64)
    for position, i in enumerate(passed):
        if kept[position]:
            norm_hashes[i] = sketches.norm_hashes[position]
            shingle_counts[i] = sketches.shingle_offsets[position + 1] - sketches.shingle_offsets[position]
    per_text = np.diff(sketches.shingle_offsets)
    shingles = sketches.shingles[np.repeat(kept, per_text)]
    band_counts = np.zeros(n, dtype=np.int64)
    band_counts[[i for position, i in enumerate(passed) if kept[position]]] = config.bands
    bands = sketches.band_keys[kept].ravel()

    columns = {field.name: [fact[field.name] for fact in submissions] for field in FACT_COLUMNS}
    columns |= {
        "partition": [fact["_partition"] for fact in submissions],
        "offset": [fact["_offset"] for fact in submissions],
        "reason": [result.reason for result in checked],
        "detail": [result.detail for result in checked],
        "text": [result.text for result in checked],
        "norm_hash": norm_hashes,
        "shingles": _lists(shingle_counts, shingles),
        "band_keys": _lists(band_counts, bands),
    }
    return pa.RecordBatch.from_pydict(columns, schema=CANDIDATE)


def _lists(counts: np.ndarray, values: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.uint64()))


def by_datanet(batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch]]:
    """Splits a batch into one sub-batch per datanet (deduplication is per datanet)."""
    ids = batch.column("datanet_id").to_numpy()
    return [(int(datanet_id), batch.filter(pa.array(ids == datanet_id))) for datanet_id in np.unique(ids)]
