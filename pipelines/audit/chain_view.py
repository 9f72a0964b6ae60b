"""What the chain itself says about rewards, read at one block: the other side of reconciliation.

The block is the newest one the audited chain facts cover (``audited_block``): the ingest checkpoint's,
never shallower than the confirmation depth those facts were ingested at (invariant 3), which the
checkpoint records. So a transaction the ingester has not been allowed to see yet is not counted as
missing, and reconciling under another ``PAYABLE_CONFIRMATIONS`` than ingest ran with changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import contracts
from payable.chain import Chain, Deployment
from pipelines.ingest.checkpoint import Checkpoint


@dataclass(frozen=True)
class ChainRewards:
    block: int
    distributor_balance: int
    outstanding: int
    published: dict[int, tuple[str, int, str]]    # epoch -> (root, total, tx hash), from EpochPublished logs
    claims: dict[tuple[int, str], tuple[int, str]]  # (epoch, account) -> (amount, tx hash), from RewardClaimed
    fundings: dict[str, int]  # tx hash -> tokens transferred into the distributor (Transfer logs)


def audited_block(head: int, ingested: Checkpoint, confirmations: int) -> int:
    """The newest block the chain facts cover: ``ingested.next_block - 1``, no nearer the head than the depth
    they were ingested at (a chain that shrank in a reorg the ingester has not seen yet); ``head -
    confirmations`` only while no checkpoint was written (facts produced some other way)."""
    if ingested.seq == 0:
        return max(head - confirmations, 0)
    depth = confirmations if ingested.confirmations is None else ingested.confirmations
    return max(min(ingested.next_block - 1, head - depth), 0)


def read_chain_rewards(chain: Chain, deployment: Deployment, block: int) -> ChainRewards:
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    window = {"from_block": deployment.deploy_block, "to_block": block}
    published = {e["args"]["epochId"]: ("0x" + e["args"]["merkleRoot"].hex(), e["args"]["total"],
                                        "0x" + e["transactionHash"].hex().removeprefix("0x"))
                 for e in distributor.events.EpochPublished().get_logs(**window)}
    claims = {(e["args"]["epochId"], e["args"]["account"].lower()): (
        e["args"]["amount"], "0x" + e["transactionHash"].hex().removeprefix("0x"))
        for e in distributor.events.RewardClaimed().get_logs(**window)}
    fundings = {"0x" + e["transactionHash"].hex().removeprefix("0x"): e["args"]["value"]
                for e in token.events.Transfer().get_logs(**window, argument_filters={"to": distributor.address})}
    return ChainRewards(block, token.functions.balanceOf(distributor.address).call(block_identifier=block),
                        distributor.functions.outstanding().call(block_identifier=block), published, claims,
                        fundings)


def epoch_roots(chain: Chain, deployment: Deployment, epoch_ids: list[int], block: int) -> dict[int, str]:
    """epoch -> root stored on-chain at ``block`` (0x00..00 when unpublished)."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    return {e: "0x" + distributor.functions.epochRoot(e).call(block_identifier=block).hex() for e in epoch_ids}


def claimed_flags(chain: Chain, deployment: Deployment, leaves: list[tuple[int, int]], block: int) -> dict:
    """(epoch, leaf index) -> the contract's claimed bit at ``block``."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    return {(e, i): distributor.functions.isClaimed(e, i).call(block_identifier=block) for e, i in leaves}
