"""ContributionVerdict: the validate stage's decision on one contribution, as an event on the log.

A verdict's id is a hash of its inputs (the fact's identity, the content hash, the rules and their
parameters, the decision), so reprocessing the same facts yields the same ids and consumers that key
by ``verdict_id`` see nothing change (invariant 2). A contribution's latest verdict is its state: an
``accepted`` one may later be followed by ``rejected``/``retracted`` when the chain reorganises.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, topics

CONTRIBUTION_VERDICT = events.register("ContributionVerdict", 1, [
    pa.field("verdict_id", pa.string(), nullable=False),
    pa.field("fact_event_id", pa.string(), nullable=False),
    pa.field("fact_block_hash", pa.string(), nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("block_number", pa.int64(), nullable=False),
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # "accepted" | "rejected"
    pa.field("reason", pa.string(), nullable=True),  # pipelines.validate.reasons; null when accepted
    pa.field("duplicate_of", pa.int64(), nullable=True),  # contribution id a duplicate repeats
    pa.field("similarity", pa.float64(), nullable=True),  # exact shingle Jaccard of a near-duplicate
    pa.field("penalize", pa.bool_(), nullable=False),  # marked for the penalty stage
    pa.field("detail", pa.string(), nullable=False),  # human-readable evidence
    pa.field("source_partition", pa.int64(), nullable=False),  # the chain fact the verdict answers
    pa.field("source_offset", pa.int64(), nullable=False),
    pa.field("rules_version", pa.string(), nullable=False),
], topics.VERDICTS)
