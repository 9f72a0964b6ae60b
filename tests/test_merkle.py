"""The payout Merkle tree matches @openzeppelin/merkle-tree's StandardMerkleTree node for node.

The expected roots and proofs below were produced once with the reference implementation:
``npm install --no-save @openzeppelin/merkle-tree@1.0.8`` in a temporary directory, then
``StandardMerkleTree.of(values(n), ["uint256", "address", "uint256"])`` with ``values`` written in JavaScript
exactly as ``fixture_values`` below (value i is ``[i - 1, account, amount]``: a payout leaf's index is its
value's position), printing ``tree.root``, ``tree.getProof(0)`` and ``tree.getProof(n - 1)``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.rewards import keccak, merkle

OZ_ROOTS = {
    1: "0x85c2d6026a18d1e170be7e34c0ef48f1afb58a015d80514e3c6e9f3bb7755899",
    2: "0xae85e35bbc84dff422f973cd9d134df1e04a59643dcfab4bedd090aff314664a",
    3: "0x643818777c7cab599071ddf29d34f77c2ce4511e0a7dd677b54abf1f5e390819",
    7: "0x4eb60f65a69fe5c3d234fe9a8f1ad5f2723519aca0e812dbb616f5d630729a0a",
    37: "0xb3bf05e4b30d08b63de12180937ae92398a3388798869f256bf7097ff7a44f3a",
    1000: "0x7687254f20cc0912a204dce5fd82c58b4bfe28c87eea7c40d9ef51a327e9043d",
}
OZ_PROOF_37_FIRST = [
    "0x7d27b441fc5eb6aa3c9efc68fe542c151556a7d18ac81fcefe822bdd3905c450",
    "0xfddf64fdc5b96d5178dffb608431e9edb3d5ca037d6cd060d1d623b96d8cad24",
    "0x7489fd25e42aee4583cede040505d33d62767694a894c38d2935d60ffbb13aac",
    "0x7ad0887fe83dca1038222c2339e97860fc8afb09b608517fc7ce263f4b45aa7a",
    "0x88ac9aa2f3e743410933a36c2dce74a3263b0bfc908961c675dbb1d91eb31232",
]
OZ_PROOF_37_LAST = [
    "0xf47d1d38583a96316a15804d1c074fa88ca6ef15a023193fa820d3850deccff0",
    "0xbf7d9d26679f6d985d3285f8393a497ec7b8ab4d9a500bb1e232efe1087fd01a",
    "0xd1c9d1afd2f6a5a7fe175dc24f56ae146c8a555dce70067f4832e7f6cc2caa7a",
    "0x15a730c9b09ca94314894be445479e37542af94295c0a32556c16cef811e4ad8",
    "0x65a205b317bc573c7d9d93374031917eebe9739d1d05ccc8b598ddf8811d492b",
]


def fixture_values(n: int) -> tuple[list[str], list[int]]:
    """Value i (1-based): account (i * 0x9e3779b97f4a7c15 * 0x100000001b3) mod 2**160, amount 1e18 * i + i**5."""
    accounts = [f"0x{(i * 0x9E3779B97F4A7C15 * 0x100000001B3) % 2**160:040x}" for i in range(1, n + 1)]
    return accounts, [10**18 * i + i**5 for i in range(1, n + 1)]


def hexes(values: list[bytes]) -> list[str]:
    return ["0x" + v.hex() for v in values]


@pytest.mark.parametrize("n", sorted(OZ_ROOTS))
def test_root_equals_openzeppelin_standard_merkle_tree(n):
    tree = merkle.build_tree(*fixture_values(n))
    assert "0x" + tree.root.hex() == OZ_ROOTS[n]


def test_proofs_equal_openzeppelin_proofs():
    tree = merkle.build_tree(*fixture_values(37))
    assert hexes(tree.proof(0)) == OZ_PROOF_37_FIRST
    assert hexes(tree.proof(36)) == OZ_PROOF_37_LAST


@pytest.mark.parametrize("n", [1, 2, 5, 64, 65, 333])
def test_every_proof_leads_to_the_root_and_only_for_its_own_leaf(n):
    rng = random.Random(n)
    accounts = [f"0x{rng.getrandbits(160):040x}" for _ in range(n)]
    amounts = [rng.getrandbits(rng.choice([1, 64, 255])) for _ in range(n)]
    tree = merkle.build_tree(accounts, amounts)
    for i, (who, amount) in enumerate(zip(accounts, amounts, strict=True)):
        leaf = merkle.leaf_hash(i, who, amount)
        assert tree.leaf(i) == leaf
        assert merkle.process_proof(leaf, tree.proof(i)) == tree.root
        assert len(tree.proof(i)) <= n.bit_length()
    if n > 1:
        assert merkle.process_proof(merkle.leaf_hash(0, accounts[0], amounts[0] + 1), tree.proof(0)) != tree.root
        assert merkle.process_proof(merkle.leaf_hash(1, accounts[0], amounts[0]), tree.proof(0)) != tree.root


def test_compiled_keccak_is_used_here_and_agrees_with_the_reference():
    assert keccak.native_library() is not None, "a C compiler is expected on payable's machines"
    rng = random.Random(7)
    for width in (1, 32, 64, 135):
        data = rng.randbytes(width * 50)
        for twice in (False, True):
            assert keccak.keccak_rows(data, width, twice) == keccak.python_rows(data, width, twice)


def test_python_fallback_builds_the_same_tree(monkeypatch):
    monkeypatch.setattr(keccak, "native_library", lambda: None)
    tree = merkle.build_tree(*fixture_values(1000))
    assert "0x" + tree.root.hex() == OZ_ROOTS[1000]


@pytest.mark.parametrize("accounts, amounts, message", [
    ([], [], "at least one leaf"),
    (["0x" + "11" * 20, "0x" + "11" * 20], [1, 2], "distinct"),
    (["0x" + "11" * 19], [1], "20-byte"),
    (["0x" + "11" * 20], [2**256], r"\[0, 2\*\*256\)"),
    (["0x" + "11" * 20], [-1], r"\[0, 2\*\*256\)"),
])
def test_invalid_values_are_refused(accounts, amounts, message):
    with pytest.raises(ValueError, match=message):
        merkle.build_tree(accounts, amounts)


def test_leaf_order_is_big_endian_even_when_leading_bytes_tie():
    rng = random.Random(11)
    rows = [rng.choice([b"\x00" * 8, b"\xff" * 8, rng.randbytes(8)]) + rng.randbytes(24) for _ in range(500)]
    matrix = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)
    assert [rows[i] for i in merkle._lexsort(matrix)] == sorted(rows)


def test_distinct_accounts_sharing_a_prefix_are_accepted():
    accounts = ["0x" + "ab" * 8 + f"{i:024x}" for i in range(5)]
    assert len(merkle.build_tree(accounts, [1, 2, 3, 4, 5])) == 5
