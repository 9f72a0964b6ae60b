"""The Merkle tree of an epoch's payouts, node for node the tree of @openzeppelin/merkle-tree.

``StandardMerkleTree.of(values, ["uint256", "address", "uint256"])`` is what contributors' wallets and the OZ
``MerkleProof`` library expect, so the tree here reproduces it exactly:

- a payout leaf = keccak256(keccak256(abi.encode(index, account, amount))), ``index`` being the value's
  position in the input (an epoch passes its accounts in ascending order): RewardDistributor keeps one
  claimed bit per index, 256 to a storage word, so a new account's claim does not pay for a fresh slot of
  its own. Double hashing means no leaf can pass for an inner node;
- leaves sorted by hash (ascending, as unsigned 256-bit numbers) and laid out as a complete binary tree in
  heap order: ``nodes`` has 2n-1 entries, node i has children 2i+1 and 2i+2, the sorted leaves fill the
  last n slots in reverse (the smallest hash is the last node), the root is node 0;
- inner node = keccak256 of its two children concatenated smaller-first (sorted-pair hashing);
- the proof of a leaf is its siblings' hashes from the leaf up to (not including) the root.

The same tree serves any fixed-width values (``tree_of_rows`` takes them ABI-encoded): the commitments of
``pipelines.commitments`` build theirs over (contribution id, content hash) and (contribution id, score).

Why this shape: the whole tree is one (2n-1, 32) byte array (64 MB for a million contributors) that is
saved as is and memory-mapped back; a proof is read off it on demand in O(log n), so no million Python
lists are ever built. Hashing runs level by level, each level one call of ``keccak.keccak_rows`` over a
contiguous buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sha3  # safe-pysha3, for the single hashes of proofs and leaves

from pipelines.rewards.keccak import keccak_rows


def keccak(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


PAYOUT_WIDTH = 96  # abi.encode(uint256 index, address account, uint256 amount)


def leaf_hash(index: int, account: str, amount: int) -> bytes:
    """keccak256(keccak256(abi.encode(index, account, amount))), as RewardDistributor computes it."""
    if index < 0:
        raise ValueError("a leaf index is at least 0")
    return row_leaf(_encode_leaves([account], [amount], first_index=index))


def row_leaf(encoded: bytes) -> bytes:
    """The leaf of one ABI-encoded value: keccak256(keccak256(encoded))."""
    return keccak(keccak(encoded))


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


def build_tree(accounts: Sequence[str], amounts: Sequence[int]) -> PayoutTree:
    """Builds the StandardMerkleTree of the payout values (i, accounts[i], amounts[i]).

    Accounts must be distinct 0x-prefixed addresses and amounts in [0, 2**256).
    """
    if len(amounts) != len(accounts):
        raise ValueError(f"{len(accounts)} accounts but {len(amounts)} amounts")
    return tree_of_rows(_encode_leaves(accounts, amounts) if accounts else b"", PAYOUT_WIDTH)


def tree_of_rows(encoded: bytes, width: int = 64) -> PayoutTree:
    """The StandardMerkleTree of values given ABI-encoded, one ``width``-byte row per value in input order."""
    n = len(encoded) // width
    if n == 0:
        raise ValueError("a Merkle tree needs at least one leaf")
    leaves = _rows(keccak_rows(encoded, width, twice=True))
    order = _lexsort(leaves)
    nodes = np.empty((2 * n - 1, 32), dtype=np.uint8)
    nodes[n - 1:] = leaves[order[::-1]]
    _hash_levels(nodes, n)
    tree_index = np.empty(n, dtype=np.int64)
    tree_index[order] = 2 * n - 2 - np.arange(n, dtype=np.int64)
    return PayoutTree(nodes, tree_index)


def _encode_leaves(accounts: Sequence[str], amounts: Sequence[int], first_index: int = 0) -> bytes:
    """abi.encode(uint256 index, address, uint256) of every value, indexes counting from ``first_index``,
    as one buffer of 96-byte rows."""
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
    indexes = np.arange(first_index, first_index + len(accounts), dtype=">u8").view(np.uint8).reshape(-1, 8)
    rows = np.zeros((len(accounts), PAYOUT_WIDTH), dtype=np.uint8)
    rows[:, 24:32] = indexes
    rows[:, 44:64] = raw
    rows[:, 64:] = np.frombuffer(amount_bytes, dtype=np.uint8).reshape(-1, 32)
    return rows.tobytes()


def _check_distinct(raw: np.ndarray) -> None:
    """Refuses a repeated account: one leaf per account and epoch."""
    padded = np.zeros((len(raw), 24), dtype=np.uint8)
    padded[:, :20] = raw
    ordered = padded[_lexsort(padded)]
    if len(ordered) > 1 and np.all(ordered[1:] == ordered[:-1], axis=1).any():
        raise ValueError("accounts must be distinct: one leaf per account and epoch")


def _rows(digests: bytes) -> np.ndarray:
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, 32)


def _words(rows: np.ndarray) -> np.ndarray:
    """Byte rows (a multiple of 8 wide) as native unsigned 64-bit words, most significant first."""
    return np.ascontiguousarray(rows).view(">u8").astype(np.uint64)


def _lexsort(rows: np.ndarray) -> np.ndarray:
    """Stable argsort of byte rows as big-endian unsigned numbers (OZ's ``compare``).

    Sorting on the first 8 bytes alone is exact unless two rows share them, which for hashes is
    astronomically rare: only then is the full multi-word sort paid for.
    """
    words = _words(rows)
    order = np.argsort(words[:, 0], kind="stable")
    head = words[order, 0]
    if np.any(head[1:] == head[:-1]):
        order = np.lexsort(words[:, ::-1].T)
    return order


def _sorted_pairs(left: np.ndarray, right: np.ndarray) -> bytes:
    """Rows of left||right with each pair's smaller hash first, as one buffer of 64-byte rows."""
    lw, rw = _words(left), _words(right)
    swap = lw[:, 3] > rw[:, 3]
    for k in (2, 1, 0):  # the most significant differing word decides
        swap = np.where(lw[:, k] == rw[:, k], swap, lw[:, k] > rw[:, k])
    pairs = np.concatenate([left, right], axis=1)
    pairs[swap] = np.concatenate([right[swap], left[swap]], axis=1)
    return pairs.tobytes()


def _hash_levels(nodes: np.ndarray, n: int) -> None:
    """Fills the n-1 inner nodes, deepest heap level first: a level's children are all known by then."""
    last_inner = n - 2
    depth = (last_inner + 1).bit_length() - 1
    while depth >= 0:
        first, last = 2**depth - 1, min(2 ** (depth + 1) - 2, last_inner)
        if first <= last:
            children = nodes[2 * first + 1: 2 * last + 3].reshape(-1, 64)
            pairs = _sorted_pairs(children[:, :32], children[:, 32:])
            nodes[first: last + 1] = _rows(keccak_rows(pairs, 64))
        depth -= 1
