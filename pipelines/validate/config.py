"""Tunable parameters of the validate stage, in one typed value passed whole.

The rules version, the text normalization and every parameter that changes a decision are hashed into
each verdict id, so a changed threshold yields new verdict ids instead of silently rewriting old decisions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property

from pipelines.validate import normalize


@dataclass(frozen=True)
class ValidateConfig:
    """What counts as valid, duplicate and near-duplicate.

    ``near_threshold`` is the Jaccard similarity of normalized word-shingle sets at or above which a
    contribution is a near-duplicate. ``bins`` x ``bands`` shape the MinHash LSH: ``bins`` one-permutation
    MinHash values per document, grouped into ``bands`` bands of ``bins // bands`` rows; the default
    (64 bins, 16 bands of 4) makes a pair at Jaccard 0.8 a candidate with probability 0.9998, and every
    candidate is then verified by its exact Jaccard, so precision does not depend on the banding.
    """

    near_threshold: float = 0.8
    shingle_words: int = 3
    bins: int = 64
    bands: int = 16
    min_words: int = 5
    max_size_cap: int = 16 * 1024 * 1024
    chunk_offsets: int = 2000
    rules_version: str = "validate-2"

    def __post_init__(self) -> None:
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError("near_threshold must be in (0, 1]")
        if self.bins % self.bands or self.bins & (self.bins - 1) or self.bins > 1024:
            raise ValueError("bins must be a power of two <= 1024 divisible by bands")
        if self.min_words < self.shingle_words:
            raise ValueError("min_words must be >= shingle_words, so every accepted text has a shingle")

    @property
    def rows_per_band(self) -> int:
        return self.bins // self.bands

    @cached_property
    def fingerprint(self) -> str:
        """A short stable hash of every decision-changing parameter (chunking excluded), normalization too."""
        doc = asdict(self) | {"normalization": normalize.VERSION}
        doc.pop("chunk_offsets")
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def sketch_fingerprint(self) -> str:
        """A short stable hash of what the stored dedupe keys depend on: normalization, shingles, MinHash.

        History sketched under another one cannot be compared with new sketches; it is rebuilt instead.
        """
        doc = [normalize.VERSION, self.shingle_words, self.bins, self.bands]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]
