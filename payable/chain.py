"""A small client for the chain: contracts by name, signed transactions, readable reverts.

Any JSON-RPC URL works (invariant 7); the embedded default is the local anvil node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import TxReceipt

import contracts


class ChainError(RuntimeError):
    """A transaction reverted or could not be sent; the message names the contract error."""


@dataclass(frozen=True)
class Deployment:
    """Where payable's contracts live on one chain; written to the data directory by ``payable deploy``."""

    chain_id: int
    deploy_block: int
    token: str
    registry: str
    distributor: str
    timelock: str
    governor: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        if not path.exists():
            raise FileNotFoundError(f"no deployment at {path}: run `payable deploy` first")
        return cls(**json.loads(path.read_text()))


class Chain:
    """Connection to one chain plus the ABIs of payable's contracts."""

    def __init__(self, rpc_url: str, timeout_s: float = 30.0):
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))

    @cached_property
    def chain_id(self) -> int:
        return self.w3.eth.chain_id

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=contracts.abi(name))

    def deploy(self, account: LocalAccount, name: str, *args: Any) -> tuple[str, TxReceipt]:
        """Deploys contract ``name`` with constructor ``args``; returns its address and receipt."""
        art = contracts.artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.transact(account, factory.constructor(*args), label=f"deploy {name}")
        return receipt["contractAddress"], receipt

    def send(self, account: LocalAccount, call: Any, *, nonce: int | None = None, label: str = "") -> bytes:
        """Signs and sends ``call`` (a contract function or constructor); returns the tx hash."""
        params = {
            "from": account.address,
            "chainId": self.chain_id,
            "nonce": self.w3.eth.get_transaction_count(account.address, "pending") if nonce is None else nonce,
        }
        try:
            tx = call.build_transaction(params)
        except (ContractCustomError, ContractLogicError) as exc:
            raise ChainError(f"{label or 'transaction'} would revert: {describe_revert(exc)}") from exc
        signed = account.sign_transaction(tx)
        return self.w3.eth.send_raw_transaction(signed.raw_transaction)

    def wait(self, tx_hash: bytes, *, label: str = "", timeout_s: float = 120.0) -> TxReceipt:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.02)
        if receipt["status"] != 1:
            raise ChainError(f"{label or 'transaction'} reverted on-chain: tx {tx_hash.hex()}")
        return receipt

    def transact(self, account: LocalAccount, call: Any, *, label: str = "") -> TxReceipt:
        """Sends ``call`` and waits for a successful receipt."""
        return self.wait(self.send(account, call, label=label), label=label)


def _custom_errors() -> dict[str, str]:
    """Selector (0x + 8 hex) -> error signature, over every payable contract's ABI."""
    errors: dict[str, str] = {}
    for name in (contracts.OPEN_TOKEN, contracts.DATANET_REGISTRY, contracts.REWARD_DISTRIBUTOR,
                 contracts.TIMELOCK, contracts.GOVERNOR):
        for entry in contracts.abi(name):
            if entry.get("type") == "error":
                signature = f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})"
                errors["0x" + function_abi_to_4byte_selector(entry).hex()] = signature
    return errors


def describe_revert(exc: Exception) -> str:
    """Names the custom error behind a revert, e.g. ``UnknownDatanet(uint256)``, where it can."""
    data = getattr(exc, "data", None) or getattr(exc, "message", None) or str(exc)
    text = data if isinstance(data, str) else str(data)
    for selector, signature in _custom_errors().items():
        if selector in text:
            return signature
    return str(exc)
