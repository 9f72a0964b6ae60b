"""Deploys payable's contract set and hands the parameters to governance.

After deployment the timelock owns the registry's parameters and administers the distributor's roles;
the deployer keeps no admin role anywhere (it renounces the timelock admin role last). The deployer
remains the treasury's initial token holder, the operator key holds the rewards-operator role, and the
attribution operator (the trainer key, which publishes model and influence commitments) holds the
AttributionRegistry's operator role.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

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


def deploy(chain: Chain, deployer: LocalAccount, operator: str, params: DeployParams = DeployParams(),
           attributor: str = ZERO_ADDRESS) -> Deployment:
    """Deploys token, timelock, governor, registry, distributor and attribution registry; returns their addresses.

    ``attributor``: who may publish commitments (none by default: the timelock can grant the role later).
    """
    token, first = chain.deploy(deployer, contracts.OPEN_TOKEN, deployer.address, params.supply)
    timelock, _ = chain.deploy(
        deployer, contracts.TIMELOCK, params.timelock_delay_s, [], [ZERO_ADDRESS], deployer.address
    )
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

    lock = chain.contract(contracts.TIMELOCK, timelock)
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE"):
        role_id = getattr(lock.functions, role)().call()
        chain.transact(deployer, lock.functions.grantRole(role_id, governor), label=f"grant {role}")
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
    )
