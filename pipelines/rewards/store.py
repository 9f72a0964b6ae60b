"""A closed epoch's files under ``<data_dir>/rewards/epoch-<n>/``: payouts, Merkle tree, summary, usage lines.

A projection of the outbox log (invariant 1): delete the directory and ``epochs.load_epoch`` rebuilds it
from the epoch's RewardAllocated events, checking that the root comes out the same. The tree is kept
whole (``tree.npy``, memory-mapped on load), so every contributor's proof is there without storing a
million lists: ``ClosedEpoch.proof`` reads one off in O(log n).
"""

from __future__ import annotations

import bisect
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from web3 import Web3

from pipelines.rewards.merkle import PayoutTree
from pipelines.rewards.split import SlashRequest
from schemas import rewards as schema

EMPTY_ROOT = bytes(32)


@dataclass(frozen=True)
class ClosedEpoch:
    """What the emitter and claimers need of a closed epoch."""

    epoch_id: int
    root: bytes              # EMPTY_ROOT when nobody is paid
    pool: int
    carry_in: int
    carry_out: int
    accounts: tuple[str, ...]  # sorted, lower-case
    amounts: tuple[int, ...]
    slash_requests: tuple[SlashRequest, ...]
    tree: PayoutTree | None
    usage_fees: int = 0       # fees of the usage events the epoch pays (their lines are in the amounts)
    usage_carry_in: int = 0
    usage_carry_out: int = 0

    @property
    def total(self) -> int:
        return sum(self.amounts)

    @property
    def balanced(self) -> bool:
        """What it pays is exactly its pool and fees plus what came in, minus what carries out."""
        return (self.total == self.pool + self.carry_in - self.carry_out + self.usage_fees + self.usage_carry_in
                - self.usage_carry_out and min(self.carry_out, self.usage_carry_out) >= 0)

    def index_of(self, account: str) -> int:
        """``account``'s leaf index: its position in the ascending account list, its bit in the claimed bitmap."""
        i = bisect.bisect_left(self.accounts, account.lower())
        if i == len(self.accounts) or self.accounts[i] != account.lower():
            raise KeyError(f"{account} has no payout in epoch {self.epoch_id}")
        return i

    def claim_args(self, i: int) -> tuple[int, str, int, list[bytes]]:
        """(index, account, amount, proof) of leaf ``i``: RewardDistributor.claim's arguments after the epoch."""
        assert self.tree is not None  # leaf i exists, so the tree has leaves
        return i, Web3.to_checksum_address(self.accounts[i]), self.amounts[i], self.tree.proof(i)


def save(directory: Path, epoch: ClosedEpoch, allocations: pa.Table | None = None,
         usage_lines: pa.Table | None = None) -> None:
    """Writes the epoch's files atomically: into a sibling temp directory, then renamed into place."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary = {
        "epoch_id": epoch.epoch_id, "merkle_root": "0x" + epoch.root.hex(), "total": str(epoch.total),
        "pool": str(epoch.pool), "carry_in": str(epoch.carry_in), "carry_out": str(epoch.carry_out),
        "accounts": len(epoch.accounts), "slash_requests": [asdict(r) for r in epoch.slash_requests],
        "usage_fees": str(epoch.usage_fees), "usage_carry_in": str(epoch.usage_carry_in),
        "usage_carry_out": str(epoch.usage_carry_out),
    }
    (tmp / "epoch.json").write_text(json.dumps(summary, indent=2) + "\n")
    tree_index = epoch.tree.tree_index if epoch.tree is not None else np.empty(0, dtype=np.int64)
    payouts = pa.table({"account": list(epoch.accounts), "amount": [str(a) for a in epoch.amounts],
                        "tree_index": tree_index}, schema=schema.PAYOUT)
    pq.write_table(payouts, tmp / "payouts.parquet")
    if epoch.tree is not None:
        np.save(tmp / "tree.npy", epoch.tree.nodes)
    if allocations is not None:
        pq.write_table(allocations, tmp / "allocations.parquet")
    if usage_lines is not None:
        pq.write_table(usage_lines, tmp / "usage.parquet")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def load(directory: Path) -> ClosedEpoch:
    summary = json.loads((directory / "epoch.json").read_text())
    payouts = pq.read_table(directory / "payouts.parquet")
    tree_file = directory / "tree.npy"
    tree = None
    if tree_file.exists():
        tree = PayoutTree(np.load(tree_file, mmap_mode="r"), payouts.column("tree_index").to_numpy())
    return ClosedEpoch(
        epoch_id=summary["epoch_id"],
        root=bytes.fromhex(summary["merkle_root"][2:]),
        pool=int(summary["pool"]),
        carry_in=int(summary["carry_in"]),
        carry_out=int(summary["carry_out"]),
        accounts=tuple(payouts.column("account").to_pylist()),
        amounts=tuple(int(a) for a in payouts.column("amount").to_pylist()),
        slash_requests=tuple(SlashRequest(**r) for r in summary["slash_requests"]),
        tree=tree,
        usage_fees=int(summary.get("usage_fees", 0)),
        usage_carry_in=int(summary.get("usage_carry_in", 0)),
        usage_carry_out=int(summary.get("usage_carry_out", 0)),
    )


def exists(directory: Path) -> bool:
    return (directory / "epoch.json").exists()
