"""The payout Merkle tree matches @openzeppelin/merkle-tree's StandardMerkleTree node for node.

The expected roots and proofs below were produced once with the reference implementation:
``npm install --no-save @openzeppelin/merkle-tree@1.0.8`` in a temporary directory, then
``StandardMerkleTree.of(values(n), ["address", "uint256"])`` with ``values`` written in JavaScript exactly as
``fixture_values`` below, printing ``tree.root``, ``tree.getProof(0)`` and ``tree.getProof(n - 1)``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.rewards import keccak, merkle

OZ_ROOTS = {
    1: "0x1cf0533699cdf4d0cb7187d873df1731c1061222d10b5bf2837a5f7dea0792d3",
    2: "0x536dbf3144ace791d60e974a198463a4d965528303d225f432243eeabc210269",
    3: "0x7d462ae47c016c59e7af00e6b8b3c0f07e88b7f49de7ee5083900cdfc0ba7fed",
    7: "0xc5cd27c3080787c215648dbd1c6c045e9da3de2994666745f148ffac70cf6255",
    37: "0xd9e2876ff0749f6324ec18a0f6c1eb07d3a730099789defb601a0db84d37ab01",
    1000: "0xe96b024c3740367fbde9d06b985a683e5473534887246d5578c76377d7762b5f",
}
OZ_PROOF_37_FIRST = [
    "0x264d58a7ca76891ac88e4073882a7c289ed875361f232d2a1317af3afbcbaae3",
    "0xb8b8d61da66f5df6b550eafbbe7a85807c2b614b21cc292bd11fbca175f482ef",
    "0x6f4cc5df81a4453f084176a511355dbb275a9f03bf5ba39326fa76c4c7a8f061",
    "0x35c51435fa639d71db6ada729932304256cbf22d687edc83013052f4b35cd17f",
    "0xcffb00a241cd1a580eddd44ed875bd17267f87314c2622a10129b5f02240aa86",
    "0x83f4ec1a610adb8b4077ed491ea08b0218ee56f756e5d88f27c382cd497151d9",
]
OZ_PROOF_37_LAST = [
    "0x1c9a090cf3c4df68f246f7ad702c8e8abd0f6c61e08d8e5ac6e5c155e7b5bc1b",
    "0x591d3e75bf77c7e96d2cd59e4cd25b69e2d98d392f7455e5ca1f89974739524a",
    *OZ_PROOF_37_FIRST[2:],
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
        leaf = merkle.leaf_hash(who, amount)
        assert tree.leaf(i) == leaf
        assert merkle.process_proof(leaf, tree.proof(i)) == tree.root
        assert len(tree.proof(i)) <= n.bit_length()
    if n > 1:
        assert merkle.process_proof(merkle.leaf_hash(accounts[0], amounts[0] + 1), tree.proof(0)) != tree.root


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
