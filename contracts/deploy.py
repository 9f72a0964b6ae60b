"""Deploys payable's contract set and hands the parameters to governance.

After deployment the timelock owns the registry's parameters and the ProtocolParameters (epoch pool, usage
terms, harm rule, reputation prior) and administers the distributor's roles; the deployer keeps no role
anywhere (it renounces its bootstrap proposer and admin roles last). The timelock is also the treasury: it
holds ``treasury_share`` of the supply and has approved the rewards operator to spend up to
``funding_allowance`` of it, which is how epochs are funded; governance changes that allowance like any
other parameter (a proposal calling ``token.approve`` from the timelock). The deployer keeps the rest of
the supply (distribution, votes), the operator key holds the rewards-operator role, and the attribution
operator (the trainer key, which publishes model and influence commitments) holds the AttributionRegistry's
operator role. The AgentRegistry (serving agents' stakes) is administered by the timelock too, which owns its
minimum stake and unstake delay and grants its validator role; the validators given at deployment hold it from
the start.

The treasury's first approval has to come from the timelock itself, before any proposal could pass: the
timelock is deployed with no delay and the deployer as its only proposer, executes that approval and its
own ``updateDelay`` in one batch, and then the deployer hands the proposer role to the governor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

import contracts
from payable.chain import Chain, Deployment

TOKEN_UNIT = 10**18
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class DeployParams:
    """Protocol parameters at launch; all but the supply can later change through governance."""

    supply: int = 1_000_000_000 * TOKEN_UNIT
    minimum_stake: int = 1 * TOKEN_UNIT
    stake_lock_period_s: int = 7 * 24 * 3600
    timelock_delay_s: int = 3600
    voting_delay_blocks: int = 1
    voting_period_blocks: int = 50
    quorum_percent: int = 4
    treasury_share: int = 100_000_000 * TOKEN_UNIT
    funding_allowance: int = 1_000_000 * TOKEN_UNIT
    epoch_pool: int = 10_000 * TOKEN_UNIT
    usage_price_per_token: int = 10**15  # OPEN wei per prompt or completion token: 0.001 OPEN
    usage_sources_bps: int = 5_000       # the cited RAG sources
    usage_training_bps: int = 4_000      # the contributors whose data trained the adapter
    usage_trainer_bps: int = 1_000       # the adapter's trainer
    refit_margin_bps: int = 10_000  # one seed-to-seed spread
    require_refit: bool = True
    prior_accepted: int = 1
    prior_rejected: int = 1
    agent_minimum_stake: int = 100 * TOKEN_UNIT  # what a serving agent locks to be listed
    agent_unstake_delay_s: int = 7 * 24 * 3600   # time a validator has to slash a leaving agent

    def protocol_values(self) -> tuple:
        """The ProtocolParameters constructor's ``Values`` struct, in its field order."""
        return (self.epoch_pool, self.usage_price_per_token, self.usage_sources_bps, self.usage_training_bps,
                self.usage_trainer_bps, self.refit_margin_bps, self.require_refit, self.prior_accepted,
                self.prior_rejected)


def deploy(chain: Chain, deployer: LocalAccount, operator: str, params: DeployParams = DeployParams(),
           attributor: str = ZERO_ADDRESS, agent_validators: Sequence[str] = ()) -> Deployment:
    """Deploys token, timelock, governor, registry, distributor, attribution registry, protocol parameters and
    agent registry, funds the treasury; returns their addresses.

    ``attributor``: who may publish commitments (none by default: the timelock can grant the role later).
    ``agent_validators``: who may slash serving agents (none by default: the timelock can grant the role later).
    """
    token, first = chain.deploy(deployer, contracts.OPEN_TOKEN, deployer.address, params.supply)
    timelock, _ = chain.deploy(deployer, contracts.TIMELOCK, 0, [deployer.address], [ZERO_ADDRESS], deployer.address)
    governor, _ = chain.deploy(
        deployer, contracts.GOVERNOR, token, timelock,
        params.voting_delay_blocks, params.voting_period_blocks, params.quorum_percent,
    )
    registry, _ = chain.deploy(
        deployer, contracts.DATANET_REGISTRY, token, timelock, timelock,
        params.minimum_stake, params.stake_lock_period_s,
    )
    distributor, _ = chain.deploy(deployer, contracts.REWARD_DISTRIBUTOR, token, timelock, operator)
    attribution, _ = chain.deploy(deployer, contracts.ATTRIBUTION_REGISTRY, timelock, attributor, distributor)
    parameters, _ = chain.deploy(deployer, contracts.PROTOCOL_PARAMETERS, timelock, params.protocol_values())
    agents, _ = chain.deploy(deployer, contracts.AGENT_REGISTRY, token, timelock, timelock,
                             params.agent_minimum_stake, params.agent_unstake_delay_s, list(agent_validators))

    lock = chain.contract(contracts.TIMELOCK, timelock)
    _fund_treasury(chain, deployer, lock, chain.contract(contracts.OPEN_TOKEN, token), operator, params)
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        role_id = getattr(lock.functions, role)().call()
        chain.transact(deployer, lock.functions.grantRole(role_id, governor), label=f"grant {role}")
        chain.transact(deployer, lock.functions.renounceRole(role_id, deployer.address), label=f"renounce {role}")
    admin_role = lock.functions.DEFAULT_ADMIN_ROLE().call()
    chain.transact(deployer, lock.functions.renounceRole(admin_role, deployer.address), label="renounce admin")

    return Deployment(
        chain_id=chain.chain_id,
        deploy_block=first["blockNumber"],
        token=Web3.to_checksum_address(token),
        registry=Web3.to_checksum_address(registry),
        distributor=Web3.to_checksum_address(distributor),
        timelock=Web3.to_checksum_address(timelock),
        governor=Web3.to_checksum_address(governor),
        attribution=Web3.to_checksum_address(attribution),
        parameters=Web3.to_checksum_address(parameters),
        agents=Web3.to_checksum_address(agents),
    )


def _fund_treasury(chain: Chain, deployer: LocalAccount, lock: Contract, token: Contract, operator: str,
                   params: DeployParams) -> None:
    """Moves the treasury share to the timelock, which (still without delay, the deployer its only proposer)
    approves the operator's funding allowance and then sets its own delay, in one batch."""
    chain.transact(deployer, token.functions.transfer(lock.address, params.treasury_share), label="fund treasury")
    batch = ([token.address, lock.address], [0, 0],
             [token.encode_abi("approve", args=[operator, params.funding_allowance]),
              lock.encode_abi("updateDelay", args=[params.timelock_delay_s])],
             bytes(32), Web3.keccak(text="payable bootstrap"))
    chain.transact(deployer, lock.functions.scheduleBatch(*batch, 0), label="schedule bootstrap")
    chain.transact(deployer, lock.functions.executeBatch(*batch), label="execute bootstrap")
