"""RewardDistributor on a real anvil: proofs from our tree verify on-chain; every misuse reverts."""

from __future__ import annotations

import random

import pytest
from web3 import Web3

from payable.chain import ChainError
from payable.keys import Role, dev_account
from pipelines.rewards import merkle

OPERATOR, DEPLOYER, CONTRIBUTOR = (dev_account(r.value) for r in (Role.OPERATOR, Role.DEPLOYER, Role.CONTRIBUTOR))


def payout_tree(n: int, seed: int = 0) -> tuple[list[str], list[int], merkle.PayoutTree]:
    """n payouts, the first three to dev accounts 3..5 (funded with ETH, so they can send claims)."""
    rng = random.Random(seed)
    accounts = [dev_account(3 + i).address for i in range(3)] + [
        Web3.to_checksum_address(f"0x{rng.getrandbits(160):040x}") for _ in range(n - 3)]
    amounts = [rng.randrange(1, 10**20) for _ in range(n)]
    return accounts, amounts, merkle.build_tree(accounts, amounts)


def claim_args(epoch: int, i: int, accounts: list[str], amounts: list[int], tree: merkle.PayoutTree) -> tuple:
    """RewardDistributor.claim's arguments for leaf i: (epoch, index, account, amount, proof)."""
    return epoch, i, accounts[i], amounts[i], tree.proof(i)


def publish(chain, token, distributor, epoch: int, tree: merkle.PayoutTree, total: int, *, fund: bool = True):
    if fund:
        chain.transact(DEPLOYER, token.functions.transfer(distributor.address, total), label="fund")
    return chain.transact(OPERATOR, distributor.functions.publishEpoch(epoch, tree.root, total), label="publish")


def test_proofs_from_a_large_tree_verify_in_the_contract(chain, token, distributor):
    accounts, amounts, tree = payout_tree(5000)
    publish(chain, token, distributor, 1, tree, sum(amounts))
    for i in [0, 1, 1234, 4999]:
        chain.transact(CONTRIBUTOR, distributor.functions.claim(*claim_args(1, i, accounts, amounts, tree)))
        assert token.functions.balanceOf(accounts[i]).call() == amounts[i]
        assert distributor.functions.isClaimed(1, i).call()
    assert not any(distributor.functions.isClaimed(1, i).call() for i in [2, 255, 256, 1233, 1235, 4998])
    assert not distributor.functions.isClaimed(2, 0).call()  # each epoch has its own bitmap
    assert distributor.functions.outstanding().call() == sum(amounts) - sum(amounts[i] for i in [0, 1, 1234, 4999])


def test_claim_batch_pays_many_accounts_in_one_transaction(chain, token, distributor):
    accounts, amounts, tree = payout_tree(40, seed=3)
    publish(chain, token, distributor, 7, tree, sum(amounts))
    claims = [claim_args(7, i, accounts, amounts, tree)[1:] for i in range(40)]
    chain.transact(OPERATOR, distributor.functions.claimBatch(7, claims), label="claimBatch")
    assert distributor.functions.outstanding().call() == 0
    assert token.functions.balanceOf(distributor.address).call() == 0


def test_only_the_operator_publishes_and_only_once(chain, token, distributor):
    _, amounts, tree = payout_tree(10)
    chain.transact(DEPLOYER, token.functions.transfer(distributor.address, 2 * sum(amounts)), label="fund")
    with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
        chain.send(DEPLOYER, distributor.functions.publishEpoch(1, tree.root, sum(amounts)))
    publish(chain, token, distributor, 1, tree, sum(amounts), fund=False)
    with pytest.raises(ChainError, match="EpochAlreadyPublished"):
        chain.send(OPERATOR, distributor.functions.publishEpoch(1, tree.root, sum(amounts)))
    with pytest.raises(ChainError, match="Underfunded"):
        chain.send(OPERATOR, distributor.functions.publishEpoch(2, tree.root, sum(amounts) + 1))


def test_second_claim_foreign_proof_and_tampered_amount_revert(chain, token, distributor):
    accounts, amounts, tree = payout_tree(10)
    publish(chain, token, distributor, 1, tree, sum(amounts))
    claim = distributor.functions.claim
    chain.transact(CONTRIBUTOR, claim(1, 0, accounts[0], amounts[0], tree.proof(0)), label="claim")
    with pytest.raises(ChainError, match="AlreadyClaimed"):
        chain.send(CONTRIBUTOR, claim(1, 0, accounts[0], amounts[0], tree.proof(0)))
    with pytest.raises(ChainError, match="InvalidProof"):
        chain.send(CONTRIBUTOR, claim(1, 1, accounts[1], amounts[1], tree.proof(2)))
    with pytest.raises(ChainError, match="InvalidProof"):
        chain.send(CONTRIBUTOR, claim(1, 1, accounts[1], amounts[1] + 1, tree.proof(1)))
    with pytest.raises(ChainError, match="InvalidProof"):  # the leaf binds its index: no second bit to claim with
        chain.send(CONTRIBUTOR, claim(1, 2, accounts[1], amounts[1], tree.proof(1)))
    with pytest.raises(ChainError, match="UnknownEpoch"):
        chain.send(CONTRIBUTOR, claim(2, 1, accounts[1], amounts[1], tree.proof(1)))
    assert token.functions.balanceOf(accounts[1]).call() == 0


def test_claims_never_pay_more_than_the_published_total(chain, token, distributor):
    accounts, amounts, tree = payout_tree(4)
    total = sum(amounts) - 1  # a root whose leaves promise more than the epoch's total
    chain.transact(DEPLOYER, token.functions.transfer(distributor.address, sum(amounts)), label="fund")
    chain.transact(OPERATOR, distributor.functions.publishEpoch(1, tree.root, total), label="publish")
    for i in range(3):
        chain.transact(CONTRIBUTOR, distributor.functions.claim(*claim_args(1, i, accounts, amounts, tree)))
    with pytest.raises(ChainError):
        chain.send(CONTRIBUTOR, distributor.functions.claim(*claim_args(1, 3, accounts, amounts, tree)))
    assert distributor.functions.outstanding().call() == total - sum(amounts[:3])
