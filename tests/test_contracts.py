"""Contract behaviour on a real anvil node: the token, the registry's stake and slash rules, governance."""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.logs import DISCARD

import contracts
from contracts.deploy import DeployParams
from payable.chain import ChainError
from payable.keys import Role, dev_account
from tests.chain_helpers import advance_time, mine

UNIT = 10**18
DEPLOYER, OPERATOR, VALIDATOR = (dev_account(r.value) for r in (Role.DEPLOYER, Role.OPERATOR, Role.VALIDATOR))
ALICE, BOB = dev_account(3), dev_account(4)


@pytest.fixture
def datanet(chain, registry, token, deployment) -> int:
    """Datanet 1 (stake 2 OPEN, max 1000 bytes, VALIDATOR validates); ALICE and BOB hold and approve OPEN."""
    chain.transact(DEPLOYER, registry.functions.createDatanet("cas://meta", 2 * UNIT, 1000, [VALIDATOR.address]))
    for account in (ALICE, BOB):
        chain.transact(DEPLOYER, token.functions.transfer(account.address, 100 * UNIT))
        chain.transact(account, token.functions.approve(deployment.registry, 100 * UNIT))
    return 1


def _contribute(chain, registry, account, datanet_id=1, size=10) -> int:
    receipt = chain.transact(account, registry.functions.contribute(datanet_id, b"\x01" * 32, "cas://x", size))
    (event,) = registry.events.ContributionSubmitted().process_receipt(receipt, errors=DISCARD)
    return event["args"]["contributionId"]


def test_deployment_hands_parameters_to_governance(chain, deployment, registry):
    timelock = chain.contract(contracts.TIMELOCK, deployment.timelock)
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    admin = timelock.functions.DEFAULT_ADMIN_ROLE().call()
    assert registry.functions.owner().call() == deployment.timelock
    assert not timelock.functions.hasRole(admin, DEPLOYER.address).call(), "deployer keeps no timelock admin"
    assert timelock.functions.hasRole(timelock.functions.PROPOSER_ROLE().call(), deployment.governor).call()
    assert distributor.functions.hasRole(admin, deployment.timelock).call()
    assert not distributor.functions.hasRole(admin, DEPLOYER.address).call()
    operator_role = distributor.functions.REWARDS_OPERATOR_ROLE().call()
    assert distributor.functions.hasRole(operator_role, OPERATOR.address).call()
    with pytest.raises(ChainError, match="OwnableUnauthorizedAccount"):
        chain.transact(DEPLOYER, registry.functions.setMinimumStake(0))


def test_contribute_pulls_the_stake_and_emits_everything_the_pipeline_needs(chain, registry, token, datanet):
    before = token.functions.balanceOf(ALICE.address).call()
    receipt = chain.transact(ALICE, registry.functions.contribute(datanet, b"\xab" * 32, "cas://sha256/ab", 42))
    (event,) = registry.events.ContributionSubmitted().process_receipt(receipt, errors=DISCARD)
    args = event["args"]
    assert (args["contributionId"], args["datanetId"], args["contributor"]) == (1, datanet, ALICE.address)
    submitted = (args["contentHash"], args["uri"], args["size"], args["stake"])
    assert submitted == (b"\xab" * 32, "cas://sha256/ab", 42, 2 * UNIT)
    assert token.functions.balanceOf(ALICE.address).call() == before - 2 * UNIT
    assert token.functions.balanceOf(registry.address).call() == 2 * UNIT


@pytest.mark.parametrize("datanet_id, size, error", [
    (99, 10, "UnknownDatanet"),
    (1, 0, "EmptyContribution"),
    (1, 1001, "ContributionTooLarge"),
])
def test_contribute_refuses_bad_submissions(chain, registry, datanet, datanet_id, size, error):
    with pytest.raises(ChainError, match=error):
        chain.transact(ALICE, registry.functions.contribute(datanet_id, b"\x01" * 32, "cas://x", size))


def test_only_a_datanet_validator_slashes_and_only_once(chain, registry, token, deployment, datanet):
    contribution = _contribute(chain, registry, ALICE)
    with pytest.raises(ChainError, match="NotValidator"):
        chain.transact(BOB, registry.functions.slash(contribution, 1))
    treasury_before = token.functions.balanceOf(deployment.timelock).call()
    receipt = chain.transact(VALIDATOR, registry.functions.slash(contribution, 3))
    (event,) = registry.events.StakeSlashed().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["reasonCode"], event["args"]["amount"]) == (3, 2 * UNIT)
    assert token.functions.balanceOf(deployment.timelock).call() == treasury_before + 2 * UNIT
    with pytest.raises(ChainError, match="NotStaked"):
        chain.transact(VALIDATOR, registry.functions.slash(contribution, 3))
    with pytest.raises(ChainError, match="UnknownContribution"):
        chain.transact(VALIDATOR, registry.functions.slash(999, 3))


def test_stake_is_released_only_after_the_lock_period_and_never_after_a_slash(chain, registry, token, datanet):
    kept, slashed = _contribute(chain, registry, ALICE), _contribute(chain, registry, ALICE)
    chain.transact(VALIDATOR, registry.functions.slash(slashed, 2))
    with pytest.raises(ChainError, match="StakeLocked"):
        chain.transact(ALICE, registry.functions.releaseStake(kept))
    advance_time(chain, DeployParams().stake_lock_period_s + 1)
    with pytest.raises(ChainError, match="NotContributor"):
        chain.transact(BOB, registry.functions.releaseStake(kept))
    before = token.functions.balanceOf(ALICE.address).call()
    chain.transact(ALICE, registry.functions.releaseStake(kept))
    assert token.functions.balanceOf(ALICE.address).call() == before + 2 * UNIT
    with pytest.raises(ChainError, match="NotStaked"):
        chain.transact(ALICE, registry.functions.releaseStake(slashed))


def test_governance_changes_the_minimum_stake_by_proposal_vote_queue_execute(chain, deployment, registry, token):
    governor = chain.contract(contracts.GOVERNOR, deployment.governor)
    params = DeployParams()
    chain.transact(DEPLOYER, token.functions.delegate(DEPLOYER.address))
    mine(chain)
    new_floor = 5 * UNIT
    calldata = registry.encode_abi("setMinimumStake", args=[new_floor])
    description = "Raise the minimum stake to 5 OPEN"
    proposal = ([registry.address], [0], [calldata])
    receipt = chain.transact(DEPLOYER, governor.functions.propose(*proposal, description))
    (created,) = governor.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
    proposal_id = created["args"]["proposalId"]

    mine(chain, params.voting_delay_blocks + 1)
    chain.transact(DEPLOYER, governor.functions.castVote(proposal_id, 1))
    mine(chain, params.voting_period_blocks + 1)
    description_hash = Web3.keccak(text=description)
    chain.transact(DEPLOYER, governor.functions.queue(*proposal, description_hash))
    with pytest.raises(ChainError):  # the timelock delay has not passed yet
        chain.transact(DEPLOYER, governor.functions.execute(*proposal, description_hash))
    advance_time(chain, params.timelock_delay_s + 1)
    chain.transact(BOB, governor.functions.execute(*proposal, description_hash))

    assert registry.functions.minimumStake().call() == new_floor
    chain.transact(DEPLOYER, registry.functions.createDatanet("cas://m", 5 * UNIT, 100, []))
    with pytest.raises(ChainError, match="StakeBelowFloor"):
        chain.transact(DEPLOYER, registry.functions.createDatanet("cas://m", UNIT, 100, []))


def test_open_token_has_votes_and_permit(chain, token):
    assert token.functions.symbol().call() == "OPEN"
    assert token.functions.getVotes(ALICE.address).call() == 0
    chain.transact(DEPLOYER, token.functions.transfer(ALICE.address, 7 * UNIT))
    chain.transact(ALICE, token.functions.delegate(ALICE.address))
    assert token.functions.getVotes(ALICE.address).call() == 7 * UNIT
    assert token.functions.nonces(ALICE.address).call() == 0  # ERC-2612 permit nonce
