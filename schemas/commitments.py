"""Model and influence commitments: the records the AttributionRegistry holds the hash of, on the log.

Events on ``payable.commitments`` (key: the commitment id, so a record and its transaction states stay in order):

- ``ModelCommitmentRecorded``: what an adapter was trained from (dataset version and the Merkle root over
  its (contribution id, content hash) rows), its base model, weights, eval set and training arguments;
- ``InfluenceCommitmentRecorded``: an influence run on a committed adapter: method and the Merkle root over
  its (contribution id, score) rows, scores as int256 fixed point (``score_scale``), quality figures (LDS,
  AUC: "0" while unmeasured);
- ``CommitmentTxState``: the publisher's outbox, one event per state of the publishing transaction (the same
  states as ``RewardTxState``). A record is on the log before its intent, and its intent before the send.
Ids and hashes are 0x-prefixed lower-case hex of 32 bytes; fixed-point integers are decimal strings.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import events, topics
from schemas.rewards import TX_STATE_FIELDS

HASH = pa.string()

MODEL_COMMITMENT_RECORDED = events.register("ModelCommitmentRecorded", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("commitment_id", HASH, nullable=False),      # keccak256(adapter id)
    pa.field("adapter_id", pa.string(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("dataset_version", pa.int64(), nullable=False),
    pa.field("dataset_root", HASH, nullable=False),
    pa.field("base_model_hash", HASH, nullable=False),
    pa.field("weights_hash", HASH, nullable=False),
    pa.field("eval_set_hash", HASH, nullable=False),
    pa.field("training_args_hash", HASH, nullable=False),
    pa.field("contributions", pa.int64(), nullable=False),
    pa.field("record_hash", HASH, nullable=False),         # what AttributionRegistry.modelRecord must hold
], topics.COMMITMENTS)

INFLUENCE_COMMITMENT_RECORDED = events.register("InfluenceCommitmentRecorded", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("commitment_id", HASH, nullable=False),      # keccak256(run)
    pa.field("run", pa.string(), nullable=False),          # "<datanet>:<dataset_version>:<adapter_id>:<method>"
    pa.field("adapter_commitment", HASH, nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("scores_root", HASH, nullable=False),
    pa.field("score_scale", pa.string(), nullable=False),
    pa.field("lds", pa.string(), nullable=False),
    pa.field("auc", pa.string(), nullable=False),
    pa.field("contributions", pa.int64(), nullable=False),
    pa.field("record_hash", HASH, nullable=False),         # what AttributionRegistry.influenceRecord must hold
], topics.COMMITMENTS)

COMMITMENT_TX_STATE = events.register("CommitmentTxState", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("commitment_id", HASH, nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("registry", pa.string(), nullable=False),
    *TX_STATE_FIELDS,  # step: model-<id prefix> | influence-<id prefix>
], topics.COMMITMENTS)
