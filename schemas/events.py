"""Event types as versioned pyarrow schemas, and their JSON encoding on the Kafka log.

An event is a flat JSON object whose fields and types are exactly those of its ``EventType.schema``.
``encode`` and ``decode`` validate against that schema, so a producer cannot write, and a consumer
never silently accepts, an event of the wrong shape: ``decode`` raises ``SchemaError`` with the reason,
which consumers turn into a dead-letter entry (invariant 5).

Token amounts are decimal strings (uint256 does not fit int64); addresses and hashes are 0x-prefixed
lower-case hex strings. A chain fact's ``event_id`` is ``"<chain_id>:<tx_hash>:<log_index>"`` and it
also carries the ``block_hash`` it was seen in (invariant 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from schemas import topics


class SchemaError(ValueError):
    """An event does not match its declared type: unknown type, missing/extra field, wrong type."""


@dataclass(frozen=True)
class EventType:
    """One versioned event type: its name, version, pyarrow schema and default topic."""

    name: str
    version: int
    schema: pa.Schema
    topic: str

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (topics.HEADER_EVENT_TYPE, self.name.encode()),
            (topics.HEADER_SCHEMA_VERSION, str(self.version).encode()),
        ]

    def to_batch(self, records: Sequence[dict]) -> pa.RecordBatch:
        """Validates ``records`` against the schema and returns them as one record batch."""
        names = set(self.schema.names)
        for record in records:
            keys = set(record)
            if keys != names:
                missing, extra = sorted(names - keys), sorted(keys - names)
                raise SchemaError(f"{self.name} v{self.version}: missing fields {missing}, unknown fields {extra}")
        try:
            batch = pa.RecordBatch.from_pylist(list(records), schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"{self.name} v{self.version}: {exc}") from exc
        for field, column in zip(self.schema, batch.columns, strict=True):
            if not field.nullable and column.null_count:
                raise SchemaError(f"{self.name} v{self.version}: field {field.name!r} must not be null")
        return batch


_REGISTRY: dict[tuple[str, int], EventType] = {}


def register(name: str, version: int, fields: Iterable[pa.Field], topic: str) -> EventType:
    """Declares an event type; (name, version) must be unique across payable."""
    if (name, version) in _REGISTRY:
        raise ValueError(f"event type {name} v{version} is declared twice")
    event_type = EventType(name, version, pa.schema(list(fields)), topic)
    _REGISTRY[(name, version)] = event_type
    return event_type


def lookup(name: str, version: int) -> EventType:
    try:
        return _REGISTRY[(name, version)]
    except KeyError:
        raise SchemaError(f"unknown event type {name!r} version {version}") from None


def registered() -> list[EventType]:
    return list(_REGISTRY.values())


def encode(event_type: EventType, records: Sequence[dict]) -> list[bytes]:
    """Validates ``records`` as ``event_type`` and returns their JSON encodings, one per record."""
    event_type.to_batch(records)
    return [json.dumps(record, separators=(",", ":"), sort_keys=True).encode() for record in records]


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> tuple[EventType, dict]:
    """Parses and validates one Kafka message; raises ``SchemaError`` saying what is wrong with it."""
    header_map = dict(headers or ())
    try:
        name = header_map[topics.HEADER_EVENT_TYPE].decode()
        version = int(header_map[topics.HEADER_SCHEMA_VERSION])
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"missing or unreadable event headers: {exc}") from exc
    event_type = lookup(name, version)
    if not value:
        raise SchemaError(f"{name} v{version}: empty message value")
    try:
        record = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{name} v{version}: value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise SchemaError(f"{name} v{version}: value is not a JSON object")
    event_type.to_batch([record])
    return event_type, record


# ---- chain facts -------------------------------------------------------------------------------

def _chain_fact(name: str, fields: list[pa.Field]) -> EventType:
    envelope = [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("chain_id", pa.int64(), nullable=False),
        pa.field("block_number", pa.int64(), nullable=False),
        pa.field("block_hash", pa.string(), nullable=False),
        pa.field("tx_hash", pa.string(), nullable=False),
        pa.field("log_index", pa.int64(), nullable=False),
        pa.field("contract", pa.string(), nullable=False),
    ]
    return register(name, 1, envelope + fields, topics.CHAIN_FACTS)


AMOUNT = pa.string()  # uint256 as a decimal string

DATANET_CREATED = _chain_fact("DatanetCreated", [
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("owner", pa.string(), nullable=False),
    pa.field("metadata_uri", pa.string(), nullable=False),
    pa.field("min_stake", AMOUNT, nullable=False),
    pa.field("max_contribution_size", pa.int64(), nullable=False),
    pa.field("permissioned", pa.bool_(), nullable=False),  # training needs the owner's grant
    pa.field("validators", pa.list_(pa.string()), nullable=False),
])

CONTRIBUTION_SUBMITTED = _chain_fact("ContributionSubmitted", [
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("stake", AMOUNT, nullable=False),
])

STAKE_SLASHED = _chain_fact("StakeSlashed", [
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("validator", pa.string(), nullable=False),
    pa.field("reason_code", pa.int64(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
])

STAKE_RELEASED = _chain_fact("StakeReleased", [
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
])

VALIDATOR_SET = _chain_fact("ValidatorSet", [
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("validator", pa.string(), nullable=False),
    pa.field("enabled", pa.bool_(), nullable=False),
])

# Access to a permissioned datanet: a model builder asks, the datanet's owner grants, later perhaps
# revokes. The contract refuses a second live grant, so each grant ends in at most one revocation.
ACCESS_REQUESTED, ACCESS_GRANTED, ACCESS_REVOKED = (_chain_fact(name, [
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("builder", pa.string(), nullable=False),
]) for name in ("AccessRequested", "AccessGranted", "AccessRevoked"))

MINIMUM_STAKE_CHANGED = _chain_fact("MinimumStakeChanged", [
    pa.field("previous", AMOUNT, nullable=False),
    pa.field("current", AMOUNT, nullable=False),
])

EPOCH_PUBLISHED = _chain_fact("EpochPublished", [
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("merkle_root", pa.string(), nullable=False),
    pa.field("total", AMOUNT, nullable=False),
])

REWARD_CLAIMED = _chain_fact("RewardClaimed", [
    pa.field("epoch_id", pa.int64(), nullable=False),
    pa.field("account", pa.string(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
])

# Serving agents (the AgentRegistry): an agent locks OPEN to be listed; unstaking delists it at once (its stake stays
# slashable until ``unlocks_at``); a validator's slash takes ``amount`` and delists it for good, naming the hash of
# the findings. Usage is paid only from an agent listed and never slashed (``pipelines.rewards.agents``).
AGENT_REGISTERED = _chain_fact("AgentRegistered", [
    pa.field("agent", pa.string(), nullable=False),
    pa.field("endpoint", pa.string(), nullable=False),
    pa.field("stake", AMOUNT, nullable=False),
])

AGENT_UNSTAKED = _chain_fact("AgentUnstaked", [
    pa.field("agent", pa.string(), nullable=False),
    pa.field("stake", AMOUNT, nullable=False),
    pa.field("unlocks_at", pa.int64(), nullable=False),
])

AGENT_SLASHED = _chain_fact("AgentSlashed", [
    pa.field("agent", pa.string(), nullable=False),
    pa.field("validator", pa.string(), nullable=False),
    pa.field("amount", AMOUNT, nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("evidence_hash", pa.string(), nullable=False),
])

# A fact that left the canonical chain in a reorg. Covers every fact type (a retracted
# ContributionSubmitted is a contribution retraction); its own id hashes the retracted id and block hash.
FACT_RETRACTED = register("FactRetracted", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("retracted_event_id", pa.string(), nullable=False),
    pa.field("retracted_event_type", pa.string(), nullable=False),
    pa.field("retracted_block_number", pa.int64(), nullable=False),
    pa.field("retracted_block_hash", pa.string(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=True),
    pa.field("contribution_id", pa.int64(), nullable=True),
    pa.field("reason", pa.string(), nullable=False),
], topics.CHAIN_FACTS)

# ---- operational events --------------------------------------------------------------------------

DEAD_LETTER = register("DeadLetter", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("error", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
    pa.field("origin", pa.string(), nullable=True),
], topics.CHAIN_DLQ)

ALERT = register("Alert", 1, [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
    pa.field("details", pa.string(), nullable=False),
], topics.ALERTS)

# Where the chain ingester stands, written in the same Kafka transaction as the facts it covers, so a
# restart resumes exactly after what consumers can see. ``block_hashes`` are the canonical hashes of the
# blocks just before ``next_block`` (the reorg window); ``mark_blocks``/``mark_offsets`` say from which
# offsets (one per partition of the facts topic) the facts of each recent chunk start, for retractions.
# v2 adds ``confirmations``, the depth the facts were ingested at, so readers of the facts (reconciliation)
# take it from the data rather than from their own environment; v1 stays readable for older logs.
_CHECKPOINT_FIELDS = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("chain_id", pa.int64(), nullable=False),
    pa.field("scope", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("next_block", pa.int64(), nullable=False),
    pa.field("block_hashes", pa.list_(pa.string()), nullable=False),
    pa.field("mark_blocks", pa.list_(pa.int64()), nullable=False),
    pa.field("mark_offsets", pa.list_(pa.list_(pa.int64())), nullable=False),
]
register("IngestCheckpoint", 1, _CHECKPOINT_FIELDS, topics.CHAIN_CHECKPOINTS)
INGEST_CHECKPOINT = register("IngestCheckpoint", 2, [
    *_CHECKPOINT_FIELDS, pa.field("confirmations", pa.int64(), nullable=False)], topics.CHAIN_CHECKPOINTS)
