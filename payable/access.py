"""Access to permissioned datanets on-chain: a model builder requests it, the datanet's owner grants or revokes it.

Each call is one transaction whose event (AccessRequested, AccessGranted, AccessRevoked) the ingester puts
on the log; the training stage decides from the log, not from contract storage, whether a trainer may
train (pipelines/training/access.py). The contract enforces who may send what (only the datanet's owner
grants and revokes; a second live grant, or revoking none, reverts), and a revert is reported by the name
of its custom error before any gas is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.logs import DISCARD

import contracts
from payable.chain import Chain, Deployment
from payable.errors import PayableError


class AccessError(PayableError, ValueError):
    """A request payable refuses before sending any transaction (e.g. a malformed address)."""


@dataclass(frozen=True)
class AccessTx:
    """One access transaction as mined: what happened, to whom, and what it cost."""

    event: str
    datanet_id: int
    builder: str
    tx_hash: str
    block_number: int
    gas_used: int


def request_access(chain: Chain, deployment: Deployment, builder: LocalAccount, datanet_id: int) -> AccessTx:
    """``builder`` asks the owner of permissioned datanet ``datanet_id`` for access."""
    return _send(chain, deployment, builder, "requestAccess", "AccessRequested", datanet_id)


def grant_access(chain: Chain, deployment: Deployment, owner: LocalAccount, datanet_id: int,
                 builder: str) -> AccessTx:
    """The datanet's ``owner`` lets ``builder`` train on the datanet."""
    return _send(chain, deployment, owner, "grantAccess", "AccessGranted", datanet_id, _address(builder))


def revoke_access(chain: Chain, deployment: Deployment, owner: LocalAccount, datanet_id: int,
                  builder: str) -> AccessTx:
    """The datanet's ``owner`` ends ``builder``'s grant."""
    return _send(chain, deployment, owner, "revokeAccess", "AccessRevoked", datanet_id, _address(builder))


def has_access(chain: Chain, deployment: Deployment, datanet_id: int, account: str) -> bool:
    """The contract's current answer (public datanet, or a live grant); the pipeline reads the log instead."""
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    return registry.functions.hasAccess(datanet_id, _address(account)).call()


def _address(value: str) -> str:
    if not Web3.is_address(value):
        raise AccessError(f"not an address: {value!r}")
    return Web3.to_checksum_address(value)


def _send(chain: Chain, deployment: Deployment, signer: LocalAccount, function: str, event: str,
          datanet_id: int, *args: str) -> AccessTx:
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    receipt = chain.transact(signer, getattr(registry.functions, function)(datanet_id, *args), label=function)
    (log,) = getattr(registry.events, event)().process_receipt(receipt, errors=DISCARD)
    return AccessTx(event, log["args"]["datanetId"], log["args"]["builder"].lower(),
                    "0x" + receipt["transactionHash"].hex().removeprefix("0x"), receipt["blockNumber"],
                    receipt["gasUsed"])
