"""What the chain itself says about rewards, read at one confirmed block: the other side of reconciliation.

Read at ``head - confirmations`` (never the head), the depth past which the ingester treats facts as final
(invariant 3), so a transaction the ingester has not been allowed to see yet is not counted as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

import contracts
from payable.chain import Chain, Deployment


@dataclass(frozen=True)
class ChainRewards:
    block: int
    distributor_balance: int
    outstanding: int
    published: dict[int, tuple[str, int, str]]    # epoch -> (root, total, tx hash), from EpochPublished logs
    claims: dict[tuple[int, str], tuple[int, str]]  # (epoch, account) -> (amount, tx hash), from RewardClaimed


def read_chain_rewards(chain: Chain, deployment: Deployment, confirmations: int) -> ChainRewards:
    block = max(chain.w3.eth.block_number - confirmations, 0)
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    window = {"from_block": deployment.deploy_block, "to_block": block}
    published = {e["args"]["epochId"]: ("0x" + e["args"]["merkleRoot"].hex(), e["args"]["total"],
                                        "0x" + e["transactionHash"].hex().removeprefix("0x"))
                 for e in distributor.events.EpochPublished().get_logs(**window)}
    claims = {(e["args"]["epochId"], e["args"]["account"].lower()): (
        e["args"]["amount"], "0x" + e["transactionHash"].hex().removeprefix("0x"))
        for e in distributor.events.RewardClaimed().get_logs(**window)}
    return ChainRewards(block, token.functions.balanceOf(distributor.address).call(block_identifier=block),
                        distributor.functions.outstanding().call(block_identifier=block), published, claims)


def epoch_roots(chain: Chain, deployment: Deployment, epoch_ids: list[int], block: int) -> dict[int, str]:
    """epoch -> root stored on-chain at ``block`` (0x00..00 when unpublished)."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    return {e: "0x" + distributor.functions.epochRoot(e).call(block_identifier=block).hex() for e in epoch_ids}


def claimed_flags(chain: Chain, deployment: Deployment, keys: list[tuple[int, str]], block: int) -> dict:
    """(epoch, account) -> the contract's claimed flag at ``block``."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    return {(e, a): distributor.functions.claimed(e, Web3.to_checksum_address(a)).call(block_identifier=block)
            for e, a in keys}
