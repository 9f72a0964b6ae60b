"""The serving agent's and the validator's paths onto the AgentRegistry: register (stake), unstake, slash.

Checks that can fail are made before a transaction is sent (no registry in the deployment, a stake below the
minimum, too little OPEN), so an agent does not pay gas for a registration that would revert.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

import contracts
from payable.chain import Chain, Deployment
from payable.errors import PayableError

STATUS = ("none", "staked", "unstaking", "slashed", "withdrawn")  # AgentRegistry.Status, in its order


class AgentError(PayableError, ValueError):
    """An agent action that payable refuses before sending any transaction."""


@dataclass(frozen=True)
class AgentState:
    """An agent's entry in the AgentRegistry."""

    address: str
    status: str
    stake: int
    unlocks_at: int


def _registry(chain: Chain, deployment: Deployment):
    if not deployment.agents:
        raise AgentError("this deployment has no AgentRegistry (it predates serving agents): redeploy with "
                         "`payable deploy`")
    return chain.contract(contracts.AGENT_REGISTRY, deployment.agents)


def agent_state(chain: Chain, deployment: Deployment, agent: str) -> AgentState:
    registry = _registry(chain, deployment)
    status, unlocks_at, stake = registry.functions.agents(chain.w3.to_checksum_address(agent)).call()
    return AgentState(agent.lower(), STATUS[status], stake, unlocks_at)


def register_agent(chain: Chain, deployment: Deployment, agent: LocalAccount, endpoint: str,
                   stake: int | None = None) -> dict:
    """Approves and locks ``stake`` OPEN (default: the registry's minimum) for ``agent`` at ``endpoint``."""
    registry = _registry(chain, deployment)
    minimum = registry.functions.minimumStake().call()
    stake = minimum if stake is None else stake
    if stake < minimum:
        raise AgentError(f"a stake of {stake} wei is below the AgentRegistry's minimum of {minimum} wei")
    state = agent_state(chain, deployment, agent.address)
    if state.status != "none":
        raise AgentError(f"agent {state.address} is already registered ({state.status})")
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    balance = token.functions.balanceOf(agent.address).call()
    if balance < stake:
        raise AgentError(f"agent {state.address} holds {balance} wei of OPEN, less than the stake of {stake} wei")
    chain.transact(agent, token.functions.approve(registry.address, stake), label="approve agent stake")
    receipt = chain.transact(agent, registry.functions.register(endpoint, stake), label="register agent")
    return {"agent": state.address, "endpoint": endpoint, "stake": str(stake),
            "tx_hash": "0x" + receipt["transactionHash"].hex(), "gas_used": receipt["gasUsed"]}


def unstake_agent(chain: Chain, deployment: Deployment, agent: LocalAccount) -> dict:
    """Delists ``agent`` now; its stake is withdrawable after the registry's unstake delay."""
    registry = _registry(chain, deployment)
    if agent_state(chain, deployment, agent.address).status != "staked":
        raise AgentError(f"agent {agent.address.lower()} is not staked")
    receipt = chain.transact(agent, registry.functions.unstake(), label="unstake agent")
    return {"agent": agent.address.lower(), "tx_hash": "0x" + receipt["transactionHash"].hex()}


def slash_agent(chain: Chain, deployment: Deployment, validator: LocalAccount, agent: str, amount: int | None,
                reason: str, evidence_hash: str) -> dict:
    """``validator`` takes ``amount`` (default: all) of ``agent``'s stake, naming the evidence's hash."""
    registry = _registry(chain, deployment)
    state = agent_state(chain, deployment, agent)
    if state.status not in ("staked", "unstaking"):
        raise AgentError(f"agent {state.address} has no stake to slash ({state.status})")
    if not registry.functions.hasRole(registry.functions.VALIDATOR_ROLE().call(), validator.address).call():
        raise AgentError(f"{validator.address.lower()} does not hold the AgentRegistry's validator role")
    amount = state.stake if amount is None else amount
    if amount > state.stake:
        raise AgentError(f"cannot slash {amount} wei: agent {state.address} has {state.stake} wei staked")
    receipt = chain.transact(validator, registry.functions.slash(chain.w3.to_checksum_address(agent), amount, reason,
                                                                 bytes.fromhex(evidence_hash.removeprefix("0x"))),
                             label="slash agent")
    return {"slashed": state.address, "amount": str(amount), "reason": reason, "evidence_hash": evidence_hash,
            "tx_hash": "0x" + receipt["transactionHash"].hex(), "gas_used": receipt["gasUsed"]}


def fund_local_agent(chain: Chain, deployment: Deployment, funder: LocalAccount, agent: str, stake: int) -> None:
    """On a local dev node only: gives ``agent`` gas money (``anvil_setBalance``; the agent's dev account is not
    one anvil funds) and ``stake`` OPEN from ``funder``, so that it can register (the demo, tests, benchmarks)."""
    chain.w3.provider.make_request("anvil_setBalance", [chain.w3.to_checksum_address(agent), hex(10**19)])
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(funder, token.functions.transfer(chain.w3.to_checksum_address(agent), stake), label="fund agent")
