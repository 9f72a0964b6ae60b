"""The ingester's checkpoint: where it stands, kept in Kafka next to the facts it covers.

A checkpoint is an IngestCheckpoint event on ``topics.CHAIN_CHECKPOINTS``, written in the same Kafka
transaction as the facts of its chunk, so what a restart resumes from is exactly what read_committed
consumers can see. The latest one for this chain and deployment (its ``scope``) wins. It also records
the confirmation depth its facts were ingested at: whoever compares the facts with the chain
(``payable reconcile``) reads the chain as deep as the data was, whatever its own environment says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from payable import kafka_log
from schemas import events, topics

if TYPE_CHECKING:  # web3 is slow to import, and the fetch workers never need it
    from payable.chain import Deployment

# How far back from the end of a checkpoint partition the first look goes (records and commit markers).
LOOKBACK = 64


@dataclass(frozen=True)
class Checkpoint:
    """The first block not yet ingested, the canonical hashes before it, and where recent chunks start."""

    chain_id: int
    scope: str
    seq: int
    next_block: int
    block_hashes: list[str] = field(default_factory=list)
    mark_blocks: list[int] = field(default_factory=list)
    mark_offsets: list[list[int]] = field(default_factory=list)
    confirmations: int | None = None  # the depth the facts before next_block were ingested at (None: unknown)

    @property
    def window_first(self) -> int:
        """The oldest block whose hash is kept."""
        return self.next_block - len(self.block_hashes)

    def record(self) -> dict:
        return {"event_id": f"{self.chain_id}:{self.scope}:checkpoint:{self.seq}", **asdict(self)}

    def successor(self, **changes: object) -> Checkpoint:
        """The next checkpoint: ``changes`` applied, sequence number advanced."""
        return replace(self, seq=self.seq + 1, **changes)


def scope_of(deployment: Deployment) -> str:
    """Which contracts a checkpoint covers: a redeployment on the same chain starts afresh."""
    return f"{deployment.registry.lower()},{deployment.distributor.lower()}@{deployment.deploy_block}"


def initial(deployment: Deployment) -> Checkpoint:
    """Before the first run: backfill from the block the contracts were deployed in."""
    return Checkpoint(deployment.chain_id, scope_of(deployment), 0, deployment.deploy_block)


def load(bootstrap: str, deployment: Deployment) -> Checkpoint:
    """The latest committed checkpoint of ``deployment``, or the initial one if there is none."""
    key, scope = topics.chain_key(deployment.chain_id), scope_of(deployment)
    latest: dict | None = None
    for partition, end in kafka_log.end_offsets(bootstrap, topics.CHAIN_CHECKPOINTS).items():
        lookback = LOOKBACK
        while True:
            start = max(0, end - lookback)
            found = [record for record in _checkpoints(bootstrap, partition, start, end, key)
                     if record["scope"] == scope]
            if found or start == 0:
                break
            lookback *= 8
        for record in found:
            if latest is None or record["seq"] > latest["seq"]:
                latest = record
    if latest is None:
        return initial(deployment)
    return Checkpoint(**{name: latest[name] for name in Checkpoint.__dataclass_fields__ if name in latest})


def _checkpoints(bootstrap: str, partition: int, start: int, end: int, key: bytes) -> list[dict]:
    records = []
    for message in kafka_log.read_range(bootstrap, topics.CHAIN_CHECKPOINTS, partition, start, end):
        if message.key != key:
            continue
        event_type, record = events.decode(message.value, message.headers)
        if event_type.name == events.INGEST_CHECKPOINT.name:  # v1 (no confirmations) or v2
            records.append(record)
    return records
