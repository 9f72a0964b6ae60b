"""The Merkle trees a commitment's root is taken over (pure): rows of a dataset version, rows of a run.

Both are the rewards' OpenZeppelin StandardMerkleTree (``pipelines.rewards.merkle``) over two-word values:
(uint256 contribution id, bytes32 content hash) for a dataset version, (uint256 contribution id, int256
score) for an influence run, so a contribution's membership is proven on-chain with ``MerkleProof``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.commitments.records import fixed_point, hash_word, word
from pipelines.rewards.merkle import PayoutTree, tree_of_rows


def dataset_row(contribution_id: int, content_hash: str) -> bytes:
    return word(contribution_id) + hash_word(content_hash)


def score_row(contribution_id: int, score: float) -> bytes:
    return word(contribution_id) + word(fixed_point(score))


def dataset_tree(contribution_ids: Sequence[int], content_hashes: Sequence[str]) -> PayoutTree:
    """The tree of a dataset version's rows, leaf i for row i."""
    return tree_of_rows(b"".join(map(dataset_row, contribution_ids, content_hashes)))


def scores_tree(contribution_ids: Sequence[int], scores: Sequence[float]) -> PayoutTree:
    """The tree of an influence run's rows, leaf i for row i."""
    return tree_of_rows(b"".join(map(score_row, contribution_ids, scores)))


