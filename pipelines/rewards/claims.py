"""A contributor claims an epoch's payout with the proof from the epoch's files (or the log).

The contract pays each leaf (index, account, amount) once per epoch; this checks ``isClaimed`` first so a
repeated claim costs no gas and says so instead of reverting.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

import contracts
from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.rewards.epochs import load_epoch


@dataclass(frozen=True)
class ClaimResult:
    epoch_id: int
    index: int  # the leaf's index: its bit in the epoch's claimed bitmap
    account: str
    amount: int
    tx_hash: str | None  # None when it had already been claimed
    gas_used: int | None


def claim(settings: Settings, deployment: Deployment, epoch_id: int, sender: LocalAccount,
          account: str | None = None) -> ClaimResult:
    """Claims ``account``'s payout (default: the sender's own) for ``epoch_id``; ``sender`` pays the gas."""
    epoch = load_epoch(settings, epoch_id)
    index, beneficiary, amount, proof = epoch.claim_args(epoch.index_of(account or sender.address))
    chain = Chain(settings.rpc_url)
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    if distributor.functions.isClaimed(epoch_id, index).call():
        return ClaimResult(epoch_id, index, beneficiary, amount, None, None)
    receipt = chain.transact(sender, distributor.functions.claim(epoch_id, index, beneficiary, amount, proof),
                             label=f"claim epoch {epoch_id}")
    tx_hash = "0x" + receipt["transactionHash"].hex()
    return ClaimResult(epoch_id, index, beneficiary, amount, tx_hash, receipt["gasUsed"])
