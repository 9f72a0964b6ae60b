"""A datanet's deduplication history: which facts were decided, which were accepted, their sketches.

Stored as append-only Arrow segments, one per run that touched the datanet, so a run writes only what
it decided and the history survives between runs; every segment is derived from the log alone, so the
whole history can be rebuilt by replaying the chain facts from offset zero (invariant 1).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.validate.candidates import FACT_COLUMNS

SEEN = "accepted", "rejected"
ACCEPTED, REJECTED, RETRACTED = "accepted", "rejected", "retracted"

STATE = pa.schema([
    pa.field("fact_key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # accepted | rejected | retracted (a tombstone)
    *[field.with_nullable(True) for field in FACT_COLUMNS],
    pa.field("verdict_id", pa.string(), nullable=True),
    pa.field("norm_hash", pa.string(), nullable=True),
    pa.field("shingles", pa.list_(pa.uint64()), nullable=False),  # accepted rows only, else empty
    pa.field("band_keys", pa.list_(pa.uint64()), nullable=False),
])


class DedupeState:
    """Indexes over a datanet's history: seen and retracted facts, exact hashes and LSH band keys.

    Accepted entries are numbered 0..n-1 in chain order (their "ordinals"); ``live`` says which of them
    are still in the dataset (not retracted). Indexes are built once per run from the segments.
    """

    def __init__(self, history: pa.Table | None = None):
        history = history if history is not None else STATE.empty_table()
        keys = history.column("fact_key").to_pylist()
        statuses = history.column("status").to_pylist()
        self.seen = {key for key, status in zip(keys, statuses, strict=True) if status in SEEN}
        self.retracted = {key for key, status in zip(keys, statuses, strict=True) if status == RETRACTED}
        self.entries = history.filter(pc.equal(history.column("status"), ACCEPTED)).combine_chunks()
        entry_keys = self.entries.column("fact_key").to_pylist()
        self.contribution_ids = self.entries.column("contribution_id").to_pylist()
        self.ordinal_of = {key: ordinal for ordinal, key in enumerate(entry_keys)}
        self.live = {ordinal for ordinal, key in enumerate(entry_keys) if key not in self.retracted}
        self.by_content: dict[str, int] = {}
        self.by_norm: dict[str, int] = {}
        for ordinal, (content, norm) in enumerate(zip(self.entries.column("content_hash").to_pylist(),
                                                      self.entries.column("norm_hash").to_pylist(), strict=True)):
            if ordinal in self.live:
                self.by_content.setdefault(content, ordinal)
                self.by_norm.setdefault(norm, ordinal)
        self._shingles = _list_parts(self.entries.column("shingles"))
        bands_offsets, bands = _list_parts(self.entries.column("band_keys"))
        owners = np.repeat(np.arange(len(self.entries)), np.diff(bands_offsets))
        order = np.argsort(bands, kind="stable")
        self._band_keys, self._band_owner = bands[order], owners[order]

    def __len__(self) -> int:
        return len(self.entries)

    def shingles(self, ordinal: int) -> np.ndarray:
        offsets, values = self._shingles
        return values[offsets[ordinal]:offsets[ordinal + 1]]

    def lsh_partners(self, band_keys: np.ndarray) -> list[np.ndarray]:
        """For each row of (m, bands) keys: the ordinals of history entries sharing a band, ascending."""
        m = band_keys.shape[0]
        flat = band_keys.ravel()
        lo = np.searchsorted(self._band_keys, flat, side="left")
        hi = np.searchsorted(self._band_keys, flat, side="right")
        counts = hi - lo
        if not counts.any():
            return [np.empty(0, dtype=np.int64)] * m
        query_row = np.repeat(np.arange(flat.size) // max(band_keys.shape[1], 1), counts)
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        owners = self._band_owner[starts + np.arange(counts.sum())]
        pairs = np.unique(np.stack([query_row, owners], axis=1), axis=0)
        split = np.searchsorted(pairs[:, 0], np.arange(m + 1))
        return [pairs[split[i]:split[i + 1], 1] for i in range(m)]


def _list_parts(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) numpy views of a list<uint64> column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.uint64)
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
    return offsets - offsets[0], values[offsets[0]:offsets[-1]]
