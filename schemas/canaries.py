"""Canary contributions on the log: the operator's known-bad plants, committed before a run, revealed after.

Events on ``payable.canaries`` (key: the datanet, so a datanet's commitment precedes its reveal):

- ``CanariesCommitted``: ``commitment`` = keccak256(salt || each sorted canary contribution id as a uint256
  word), written before the influence run that is judged by it; the ids stay secret until the reveal, so the
  operator cannot pick "canaries" after seeing which contributions scored worst. v2 also records who planted
  them (``planter``) and the planting window ``(from_block, block]``: the chain head before the canaries were
  submitted and when the commitment was recorded;
- ``CanariesRevealed``: the salt and the ids; valid only when they hash to an earlier commitment of the same
  datanet and every id's ContributionSubmitted came from its planter inside its window
  (``pipelines.attribution.canaries``), so no one else's contribution can be named a canary. A revealed
  canary is never paid (``pipelines.rewards.split``).
Hashes and the salt are 0x-prefixed lower-case hex of 32 bytes.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, topics

_COMMITTED = [
    pa.field("event_id", pa.string(), nullable=False),     # the commitment itself
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("commitment", pa.string(), nullable=False),
    pa.field("count", pa.int64(), nullable=False),          # how many canaries (public: the AUC's sample size)
]
# v1 recorded no planter: its reveal is refused (nothing shows the ids were the operator's own plants).
CANARIES_COMMITTED_V1 = events.register("CanariesCommitted", 1, _COMMITTED, topics.CANARIES)
CANARIES_COMMITTED = events.register("CanariesCommitted", 2, [
    *_COMMITTED,
    pa.field("planter", pa.string(), nullable=False),       # lower-case address that submitted the canaries
    pa.field("from_block", pa.int64(), nullable=False),     # chain head before they were submitted
    pa.field("block", pa.int64(), nullable=False),          # chain head when the commitment was recorded
], topics.CANARIES)

CANARIES_REVEALED = events.register("CanariesRevealed", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("commitment", pa.string(), nullable=False),
    pa.field("salt", pa.string(), nullable=False),
    pa.field("contribution_ids", pa.list_(pa.int64()), nullable=False),
], topics.CANARIES)
