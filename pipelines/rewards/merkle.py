"""The Merkle tree of an epoch's payouts, node for node the tree of @openzeppelin/merkle-tree.

``StandardMerkleTree.of(values, ["address", "uint256"])`` is what contributors' wallets and the OZ
``MerkleProof`` library expect, so the tree here reproduces it exactly:

- leaf = keccak256(keccak256(abi.encode(account, amount))) (double hashing, so no 64-byte leaf can pass
  for an inner node);
- leaves sorted by hash (ascending, as unsigned 256-bit numbers) and laid out as a complete binary tree in
  heap order: ``nodes`` has 2n-1 entries, node i has children 2i+1 and 2i+2, the sorted leaves fill the
  last n slots in reverse (the smallest hash is the last node), the root is node 0;
- inner node = keccak256 of its two children concatenated smaller-first (sorted-pair hashing);
- the proof of a leaf is its siblings' hashes from the leaf up to (not including) the root.

Why this shape: the whole tree is one (2n-1, 32) byte array (64 MB for a million contributors) that is
saved as is and memory-mapped back; a proof is read off it on demand in O(log n), so no million Python
lists are ever built. Hashing runs level by level over contiguous buffers, and a large tree spreads
the hashing over forked worker processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import sha3  # safe-pysha3: a C keccak256 at about 1-2 µs per call, the fastest one installed

MAX_UINT256 = 2**256 - 1
# Below this many hashes a level is hashed in-process: a worker round-trip would cost more than it saves.
PARALLEL_MIN_ROWS = 65_536


def keccak(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def leaf_hash(account: str, amount: int) -> bytes:
    """keccak256(keccak256(abi.encode(account, amount))), as RewardDistributor computes it."""
    return keccak(keccak(_encode_leaves([account], [amount])))


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b if a <= b else b + a)


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from ``leaf`` (OZ ``MerkleProof.processProof``)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


@dataclass(frozen=True)
class PayoutTree:
    """A built tree: its nodes in heap order and where each input value's leaf sits."""

    nodes: np.ndarray       # (2n-1, 32) uint8, heap order as in the module docstring
    tree_index: np.ndarray  # (n,) int64: node index of the leaf of value i (i in input order)

    @property
    def root(self) -> bytes:
        return self.nodes[0].tobytes()

    def __len__(self) -> int:
        return len(self.tree_index)

    def leaf(self, value_index: int) -> bytes:
        return self.nodes[int(self.tree_index[value_index])].tobytes()

    def proof(self, value_index: int) -> list[bytes]:
        """Sibling hashes from value ``value_index``'s leaf up to the root (OZ ``getProof``)."""
        index = int(self.tree_index[value_index])
        proof = []
        while index > 0:
            sibling = index + 1 if index % 2 else index - 1
            proof.append(self.nodes[sibling].tobytes())
            index = (index - 1) // 2
        return proof


def build_tree(accounts: Sequence[str], amounts: Sequence[int], *, workers: int | None = None) -> PayoutTree:
    """Builds the StandardMerkleTree of the values (accounts[i], amounts[i]).

    Accounts must be distinct 0x-prefixed addresses and amounts in [0, 2**256). ``workers`` caps the hashing
    processes (default: one per CPU); trees under PARALLEL_MIN_ROWS leaves, or a caller running other
    threads, hash in-process.
    """
    n = len(accounts)
    if n == 0:
        raise ValueError("a Merkle tree needs at least one leaf")
    if len(amounts) != n:
        raise ValueError(f"{n} accounts but {len(amounts)} amounts")
    workers = max(1, workers or os.cpu_count() or 1)
    pool = _pool(workers) if workers > 1 and n >= PARALLEL_MIN_ROWS and threading.active_count() == 1 else None
    try:
        leaves = _rows(_hash_rows(_encode_leaves(accounts, amounts), 64, True, pool, workers))
        order = _lexsort(leaves)
        nodes = np.empty((2 * n - 1, 32), dtype=np.uint8)
        nodes[n - 1:] = leaves[order[::-1]]
        _hash_levels(nodes, n, pool, workers)
    finally:
        if pool is not None:
            pool.shutdown()
    tree_index = np.empty(n, dtype=np.int64)
    tree_index[order] = 2 * n - 2 - np.arange(n, dtype=np.int64)
    return PayoutTree(nodes, tree_index)


def _encode_leaves(accounts: Sequence[str], amounts: Sequence[int]) -> bytes:
    """abi.encode(address, uint256) of every value, as one buffer of 64-byte rows."""
    if any(len(a) != 42 or a[:2] not in ("0x", "0X") for a in accounts):
        raise ValueError("every account must be a 0x-prefixed 20-byte address")
    try:
        raw = np.frombuffer(bytes.fromhex("".join([a[2:] for a in accounts])), dtype=np.uint8).reshape(-1, 20)
    except ValueError as exc:
        raise ValueError(f"an account is not hex: {exc}") from exc
    _check_distinct(raw)
    try:
        amount_bytes = b"".join([int(a).to_bytes(32, "big") for a in amounts])
    except OverflowError as exc:
        raise ValueError("amounts must lie in [0, 2**256)") from exc
    rows = np.zeros((len(accounts), 64), dtype=np.uint8)
    rows[:, 12:32] = raw
    rows[:, 32:] = np.frombuffer(amount_bytes, dtype=np.uint8).reshape(-1, 32)
    return rows.tobytes()


def _check_distinct(raw: np.ndarray) -> None:
    """Refuses a repeated account: one leaf per account and epoch (sorting three words beats a set of bytes)."""
    padded = np.zeros((len(raw), 24), dtype=np.uint8)
    padded[:, :20] = raw
    words = padded.view(">u8")
    ordered = words[np.lexsort((words[:, 2], words[:, 1], words[:, 0]))]
    if len(ordered) > 1 and np.all(ordered[1:] == ordered[:-1], axis=1).any():
        raise ValueError("accounts must be distinct: one leaf per account and epoch")


def _rows(digests: bytes) -> np.ndarray:
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)


def _lexsort(hashes: np.ndarray) -> np.ndarray:
    """Stable argsort of 32-byte rows as big-endian unsigned numbers (OZ's ``compare``)."""
    words = np.ascontiguousarray(hashes).view(">u8")
    return np.lexsort((words[:, 3], words[:, 2], words[:, 1], words[:, 0]))


def _sorted_pairs(left: np.ndarray, right: np.ndarray) -> bytes:
    """Rows of left||right with each pair's smaller hash first, as one buffer of 64-byte rows."""
    lw, rw = np.ascontiguousarray(left).view(">u8"), np.ascontiguousarray(right).view(">u8")
    differs = lw != rw
    first = differs.argmax(axis=1)
    rows = np.arange(len(lw))
    swap = differs[rows, first] & (lw[rows, first] > rw[rows, first])
    pairs = np.concatenate([left, right], axis=1)
    pairs[swap] = np.concatenate([right[swap], left[swap]], axis=1)
    return pairs.tobytes()


def _hash_levels(nodes: np.ndarray, n: int, pool: ProcessPoolExecutor | None, workers: int) -> None:
    """Fills the n-1 inner nodes, deepest heap level first: a level's children are all known by then."""
    last_inner = n - 2
    depth = (last_inner + 1).bit_length() - 1
    while depth >= 0:
        first, last = 2**depth - 1, min(2 ** (depth + 1) - 2, last_inner)
        if first <= last:
            children = nodes[2 * first + 1: 2 * last + 3].reshape(-1, 64)
            pairs = _sorted_pairs(children[:, :32], children[:, 32:])
            nodes[first: last + 1] = _rows(_hash_rows(pairs, 64, False, pool, workers))
        depth -= 1


def _hash_rows(data: bytes, width: int, double: bool, pool: ProcessPoolExecutor | None, workers: int) -> bytes:
    """keccak256 (twice when ``double``) of each ``width``-byte row of ``data``, digests concatenated."""
    count = len(data) // width
    if pool is None or count < PARALLEL_MIN_ROWS:
        return _hash_chunk(data, width, double)
    step = -(-count // workers) * width
    chunks = [data[i: i + step] for i in range(0, len(data), step)]
    return b"".join(pool.map(_hash_chunk, chunks, [width] * len(chunks), [double] * len(chunks)))


def _hash_chunk(data: bytes, width: int, double: bool) -> bytes:
    k = sha3.keccak_256
    view = memoryview(data)
    if double:
        return b"".join([k(k(view[i: i + width]).digest()).digest() for i in range(0, len(data), width)])
    return b"".join([k(view[i: i + width]).digest() for i in range(0, len(data), width)])


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: a worker starts in milliseconds, without re-importing the caller's __main__ as spawn and forkserver
    # do. build_tree forks only from a single-threaded process, where no other thread can hold a lock.
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"))
