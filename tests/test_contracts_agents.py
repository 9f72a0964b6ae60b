"""The AgentRegistry on a real anvil node: who may stake, unstake, slash, and what each leaves on-chain."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

import contracts
from contracts.deploy import DeployParams
from payable.agents import AgentError, agent_state, fund_local_agent, register_agent, slash_agent, unstake_agent
from payable.chain import ChainError
from payable.keys import Role, dev_account
from tests.chain_helpers import advance_time

DEPLOYER, VALIDATOR, AGENT = dev_account(Role.DEPLOYER.value), dev_account(Role.VALIDATOR.value), dev_account(
    Role.AGENT.value)
STRANGER = dev_account(4)
MINIMUM = DeployParams().agent_minimum_stake
EVIDENCE = "0x" + "e5" * 32


@pytest.fixture
def agents(chain, deployment):
    fund_local_agent(chain, deployment, DEPLOYER, AGENT.address, 2 * MINIMUM)
    return chain.contract(contracts.AGENT_REGISTRY, deployment.agents)


def test_register_locks_at_least_the_minimum_once(chain, deployment, token, agents):
    with pytest.raises(AgentError, match="below the AgentRegistry's minimum"):
        register_agent(chain, deployment, AGENT, "http://127.0.0.1:8000", MINIMUM - 1)
    with pytest.raises(ChainError, match="StakeBelowMinimum"):
        chain.transact(AGENT, agents.functions.register("http://x", MINIMUM - 1))
    registered = register_agent(chain, deployment, AGENT, "http://127.0.0.1:8000")
    assert registered["stake"] == str(MINIMUM)
    assert agents.functions.isStaked(AGENT.address).call()
    assert token.functions.balanceOf(agents.address).call() == MINIMUM
    assert agent_state(chain, deployment, AGENT.address).status == "staked"
    with pytest.raises(ChainError, match="AlreadyRegistered"):
        chain.transact(AGENT, agents.functions.register("http://x", MINIMUM))


def test_only_a_validator_slashes_and_the_stake_goes_to_the_treasury(chain, deployment, token, agents):
    register_agent(chain, deployment, AGENT, "http://127.0.0.1:8000")
    for who in (STRANGER, AGENT, DEPLOYER):
        with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
            chain.transact(who, agents.functions.slash(AGENT.address, 1, "phantom_citation", bytes(32)))
    with pytest.raises(AgentError, match="validator role"):
        slash_agent(chain, deployment, STRANGER, AGENT.address, None, "phantom_citation", EVIDENCE)
    treasury_before = token.functions.balanceOf(deployment.timelock).call()

    slashed = slash_agent(chain, deployment, VALIDATOR, AGENT.address, MINIMUM // 4, "phantom_citation", EVIDENCE)
    receipt = chain.w3.eth.get_transaction_receipt(slashed["tx_hash"])
    (event,) = agents.events.AgentSlashed().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["agent"], event["args"]["validator"]) == (AGENT.address, VALIDATOR.address)
    assert (event["args"]["amount"], event["args"]["reason"]) == (MINIMUM // 4, "phantom_citation")
    assert "0x" + event["args"]["evidenceHash"].hex() == EVIDENCE
    assert token.functions.balanceOf(deployment.timelock).call() == treasury_before + MINIMUM // 4
    state = agent_state(chain, deployment, AGENT.address)
    assert (state.status, state.stake) == ("slashed", MINIMUM - MINIMUM // 4)
    assert not agents.functions.isStaked(AGENT.address).call(), "a slashed agent is delisted"
    with pytest.raises(ChainError, match="AlreadyRegistered"):
        chain.transact(AGENT, agents.functions.register("http://x", MINIMUM))
    with pytest.raises(ChainError, match="StakeLocked"):
        chain.transact(AGENT, agents.functions.withdraw())
    advance_time(chain, DeployParams().agent_unstake_delay_s)
    chain.transact(AGENT, agents.functions.withdraw())
    assert token.functions.balanceOf(AGENT.address).call() == 2 * MINIMUM - MINIMUM // 4, "the rest comes back"


def test_unstake_delists_at_once_but_a_slash_can_still_land_before_the_delay(chain, deployment, token, agents):
    register_agent(chain, deployment, AGENT, "http://127.0.0.1:8000")
    unstake_agent(chain, deployment, AGENT)
    assert not agents.functions.isStaked(AGENT.address).call()
    with pytest.raises(ChainError, match="StakeLocked"):
        chain.transact(AGENT, agents.functions.withdraw())
    slash_agent(chain, deployment, VALIDATOR, AGENT.address, None, "duplicated_request", EVIDENCE)
    assert agent_state(chain, deployment, AGENT.address).stake == 0
    advance_time(chain, DeployParams().agent_unstake_delay_s)
    chain.transact(AGENT, agents.functions.withdraw())
    assert token.functions.balanceOf(AGENT.address).call() == MINIMUM, "the slashed stake did not come back"


def test_the_minimum_and_the_delay_belong_to_the_timelock(chain, deployment, agents):
    admin = agents.functions.DEFAULT_ADMIN_ROLE().call()
    assert agents.functions.hasRole(admin, deployment.timelock).call()
    assert not agents.functions.hasRole(admin, DEPLOYER.address).call()
    for call in (agents.functions.setMinimumStake(0), agents.functions.setUnstakeDelay(0)):
        with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
            chain.transact(DEPLOYER, call)
