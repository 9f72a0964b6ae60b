"""Reward epochs: the tables the split reads and writes, and the events of the rewards outbox.

Tables (pyarrow schemas; a table may carry more columns, the split reads these):

- ``INFLUENCE``: one row per (contribution, adapter, method), written by the attribution stage.
- ``VERDICT``: one row per decided contribution, from the validate stage's verdict events (history up to
  the epoch's cut-off, so reputation sees every past decision).
- ``PAYOUT``: one row per paid account of a closed epoch, with the leaf's index in the Merkle tree.
- ``ALLOCATION``: the audit trail of a split, one row per contribution that had an influence score.

Events on ``payable.rewards.outbox`` (key ``epoch-<n>``, so an epoch's events stay in order):

- ``RewardAllocated``: one per paid account, written when an epoch is closed;
- ``ContributionAllocated``: one per scored contribution of the epoch (its ``ALLOCATION`` row), so the
  per-contribution audit trail is part of the epoch's record and a replay never has to recompute it;
- ``SlashRequested``: one per contribution whose stake the validator key must slash, with the evidence of
  a harm slash (v2; v1 events, written before, carry none);
- ``UsageAllocated``: one per (usage event, account, role, contribution) line an epoch pays for usage
  (``pipelines.rewards.usage_split``), so what each served call paid whom is on the log;
- ``RewardEpochClosed``: written last when an epoch is closed, the commit marker of the allocations
  before it (from ``first_offset``); it carries the root the replay must reproduce, (v2) the governed
  parameters it was decided by, with the block they were read at (v1 events, written before, carry none),
  and (v3) the usage batch: fees, carry, the number of usage events paid and the root over their sorted ids
  (v1 and v2 events read as an epoch that paid no usage);
- ``RewardTxState``: the emitter's outbox, one event per state of one chain transaction step
  (intent, sent, confirmed, failed, superseded, done). An intent is durable on the log before the
  transaction leaves the process.
- ``RewardEpochOnChain``: written by the emitter once every step of the epoch is done on one
  distributor; an epoch closed on the log without it is unfinished, and the next run resumes it.
Amounts are decimal strings (uint256 does not fit int64), addresses and hashes 0x-prefixed lower-case hex.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, influence, topics

AMOUNT = pa.string()

# The influence table's columns the split reads (a projection, so the two cannot drift apart).
INFLUENCE = pa.schema([influence.INFLUENCE.field(name) for name in (
    "contribution_id", "contributor", "datanet_id", "dataset_version", "adapter_id", "method", "score", "rank")])

VERDICT = pa.schema([
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # accepted | rejected
    pa.field("reason", pa.string(), nullable=True),   # duplicate, near_duplicate, hash_mismatch, harmful, ...
    pa.field("duplicate_of", pa.int64(), nullable=True),
])

PAYOUT = pa.schema([
    pa.field("account", pa.string(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
    pa.field("tree_index", pa.int64(), nullable=False),
])

ALLOCATION = pa.schema([
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("influence", pa.float64(), nullable=False),       # mean score over the epoch's rows
    pa.field("reputation_ppb", pa.int64(), nullable=False),    # contributor's reputation, parts per 1e9
    pa.field("outcome", pa.string(), nullable=False),          # paid | no_positive_influence | rejected:<reason> ...
])

REWARD_ALLOCATED = events.register("RewardAllocated", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("account", pa.string(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
], topics.REWARDS_OUTBOX)

_SLASH_REQUEST = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("reason_code", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
]

# The evidence of a harm slash (reason_code 2, reason harmful_influence; null for a slash on a verdict): the
# influence score, its bootstrap interval over the eval queries, its robust z-score within the run, and the
# counterfactual refit's eval-loss improvement against the seed-to-seed spread (pipelines.attribution).
HARM_EVIDENCE = [pa.field(name, pa.float64(), nullable=True)
                 for name in ("score", "score_low", "score_high", "robust_z", "refit_delta", "refit_spread")]

SLASH_REQUESTED_V1 = events.register("SlashRequested", 1, _SLASH_REQUEST, topics.REWARDS_OUTBOX)
SLASH_REQUESTED = events.register("SlashRequested", 2, _SLASH_REQUEST + HARM_EVIDENCE, topics.REWARDS_OUTBOX)

CONTRIBUTION_ALLOCATED = events.register("ContributionAllocated", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    *ALLOCATION,
], topics.REWARDS_OUTBOX)

_EPOCH_CLOSED = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("merkle_root", pa.string(), nullable=False),
    pa.field("total", AMOUNT, nullable=False),
    pa.field("pool", AMOUNT, nullable=False),
    pa.field("carry_in", AMOUNT, nullable=False),
    pa.field("carry_out", AMOUNT, nullable=False),
    pa.field("accounts", pa.int64(), nullable=False),
    pa.field("slash_requests", pa.int64(), nullable=False),
    pa.field("first_offset", pa.int64(), nullable=False),  # where this close's RewardAllocated events start
    pa.field("inputs_digest", pa.string(), nullable=False),
    pa.field("rules", pa.string(), nullable=False),         # the SplitRules as JSON
    # the influence runs paid, "<datanet>:<dataset_version>:<adapter_id>:<method>": each is paid in one epoch
    pa.field("influence_runs", pa.list_(pa.string()), nullable=False),
]
REWARD_EPOCH_CLOSED_V1 = events.register("RewardEpochClosed", 1, _EPOCH_CLOSED, topics.REWARDS_OUTBOX)
# v2: the governed parameters the epoch was decided by (pipelines.rewards.params.GovernedParams as JSON: pool,
# harm rule, reputation prior, usage terms, the ProtocolParameters address) and the block they were read at.
_GOVERNED = [
    pa.field("params", pa.string(), nullable=False),
    pa.field("params_block", pa.int64(), nullable=False),
]
REWARD_EPOCH_CLOSED_V2 = events.register("RewardEpochClosed", 2, _EPOCH_CLOSED + _GOVERNED, topics.REWARDS_OUTBOX)

# v3: the usage batch of the epoch, and the values a v1 or v2 marker reads as (no usage paid).
USAGE_BATCH = [
    pa.field("usage_fees", AMOUNT, nullable=False),       # fees of the usage events paid (wei)
    pa.field("usage_carry_in", AMOUNT, nullable=False),   # the previous epoch's usage remainder
    pa.field("usage_carry_out", AMOUNT, nullable=False),  # what this epoch's usage lines left (floor division)
    pa.field("usage_events", pa.int64(), nullable=False),  # how many usage events it paid
    pa.field("usage_root", pa.string(), nullable=False),  # root over their sorted ids (0x00.. when none)
]
USAGE_BATCH_V1 = {"usage_fees": "0", "usage_carry_in": "0", "usage_carry_out": "0", "usage_events": 0,
                  "usage_root": "0x" + "00" * 32}
REWARD_EPOCH_CLOSED = events.register("RewardEpochClosed", 3, _EPOCH_CLOSED + _GOVERNED + USAGE_BATCH,
                                      topics.REWARDS_OUTBOX)

USAGE_ROLES = ("source", "training", "trainer")
USAGE_PAYOUT = pa.schema([
    pa.field("usage_event_id", pa.string(), nullable=False),
    pa.field("account", pa.string(), nullable=False),
    pa.field("role", pa.string(), nullable=False),               # source | training | trainer
    pa.field("contribution_id", pa.int64(), nullable=True),      # null for the trainer
    pa.field("datanet_id", pa.int64(), nullable=True),
    pa.field("adapter_id", pa.string(), nullable=True),          # the adapter a training/trainer line pays for
    pa.field("amount", AMOUNT, nullable=False),
])
USAGE_ALLOCATED = events.register("UsageAllocated", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    *USAGE_PAYOUT,
], topics.REWARDS_OUTBOX)

# The fields of one state of one outbox transaction step (pipelines.rewards.txsteps), after the fields that name
# the step's scope; other outboxes (the commitments') reuse them.
TX_STATE_FIELDS = [
    pa.field("step", pa.string(), nullable=False),      # fund | publish | slash-<id> | push-<batch>
    pa.field("state", pa.string(), nullable=False),     # intent | sent | confirmed | failed | superseded | done
    pa.field("sender", pa.string(), nullable=True),
    pa.field("nonce", pa.int64(), nullable=True),
    pa.field("tx_hash", pa.string(), nullable=True),
    pa.field("raw_tx", pa.string(), nullable=True),     # the signed transaction, so a restart re-sends it
    pa.field("block_number", pa.int64(), nullable=True),
    pa.field("detail", pa.string(), nullable=False),
]

REWARD_TX_STATE = events.register("RewardTxState", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("distributor", pa.string(), nullable=False),
    *TX_STATE_FIELDS,
], topics.REWARDS_OUTBOX)

REWARD_EPOCH_ON_CHAIN = events.register("RewardEpochOnChain", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("distributor", pa.string(), nullable=False),
    pa.field("merkle_root", pa.string(), nullable=False),
], topics.REWARDS_OUTBOX)
