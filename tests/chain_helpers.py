"""Small helpers for tests that drive the local anvil node directly."""

from __future__ import annotations

import dataclasses

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

import contracts
from contracts.deploy import DeployParams
from payable.chain import Chain, Deployment
from pipelines.rewards.params import GovernedParams


def mine(chain: Chain, blocks: int = 1) -> None:
    chain.w3.provider.make_request("anvil_mine", [hex(blocks)])


def advance_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    mine(chain)


def fixed_params(pool: int) -> GovernedParams:
    """The launch parameters with pool ``pool``, as if read from chain: for tests that close an epoch directly."""
    values = dataclasses.replace(DeployParams(), epoch_pool=pool).protocol_values()
    return GovernedParams(*values)


def enact(chain: Chain, deployment: Deployment, calls: list[tuple[Contract, str, list]], description: str,
          voter: LocalAccount) -> TxReceipt:
    """Passes ``calls`` (contract, function, args) through the Governor: ``voter`` (who must hold enough
    delegated OPEN for quorum) proposes and votes for; queue, wait out the timelock delay, execute.
    Returns the execute receipt; a call that reverts in the timelock raises ChainError at execute."""
    governor = chain.contract(contracts.GOVERNOR, deployment.governor)
    proposal = ([c.address for c, _, _ in calls], [0] * len(calls),
                [c.encode_abi(fn, args=args) for c, fn, args in calls])
    receipt = chain.transact(voter, governor.functions.propose(*proposal, description), label="propose")
    (created,) = governor.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
    proposal_id = created["args"]["proposalId"]
    mine(chain, governor.functions.votingDelay().call() + 1)
    chain.transact(voter, governor.functions.castVote(proposal_id, 1), label="vote")
    mine(chain, governor.functions.votingPeriod().call() + 1)
    description_hash = Web3.keccak(text=description)
    chain.transact(voter, governor.functions.queue(*proposal, description_hash), label="queue")
    timelock = chain.contract(contracts.TIMELOCK, deployment.timelock)
    advance_time(chain, timelock.functions.getMinDelay().call() + 1)
    return chain.transact(voter, governor.functions.execute(*proposal, description_hash), label="execute")
