"""A small client for the chain: contracts by name, signed transactions, readable reverts.

Any JSON-RPC URL works (invariant 7); the embedded default is the local anvil node. ``chain_error`` is the
one place that turns what web3 and the node throw (a refused connection, "insufficient funds", "nonce too
low", a receipt that never came) into a ``ChainError`` of one line that says what to do.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import TxReceipt

import contracts
from payable.errors import PayableError


class ChainError(PayableError, RuntimeError):
    """A transaction reverted or could not be sent, or the node could not be reached; one line saying why."""


class DeploymentMissing(PayableError, FileNotFoundError):
    """No ``deployment.json`` in the data directory: nothing has been deployed there yet."""


# What a node's error message means for the person who sent the transaction (geth, anvil, reth wording).
_RPC_HINTS = (
    (re.compile(r"insufficient funds", re.I), "{sender} has too little ETH to pay for gas"),
    (re.compile(r"nonce too low|nonce has already been used", re.I),
     "another transaction from {sender} took this nonce first; rerun to send with the next nonce"),
    (re.compile(r"replacement transaction underpriced", re.I),
     "a pending transaction from {sender} holds this nonce; wait for it to be mined, then rerun"),
)


def chain_error(exc: BaseException, *, rpc_url: str = "", label: str = "", sender: str = "") -> ChainError | None:
    """The one-line ChainError for a failure of web3, the HTTP transport or the node; None if ``exc`` is none.

    Connection failures stay ``requests`` exceptions inside the stages (the rewards emitter retries them);
    this mapping is applied where a failure leaves for the user: ``Chain.send``/``wait`` and the CLI.
    """
    import requests

    what = label or "chain call"
    if isinstance(exc, ChainError):
        return exc
    if isinstance(exc, requests.ConnectionError):
        url = rpc_url or getattr(getattr(exc, "request", None), "url", None) or "the configured RPC URL"
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        why = errno[1].strip().lower() if errno else "connection failed"
        return ChainError(f"cannot reach the chain at {url} ({why}): start it with `payable up`, "
                          "or set PAYABLE_RPC_URL to a running node")
    if isinstance(exc, requests.Timeout):
        return ChainError(f"{what}: the chain at {rpc_url or 'the RPC URL'} did not answer in time")
    if isinstance(exc, TimeExhausted):
        return ChainError(f"{what}: no receipt in time ({_first_line(exc)}); the transaction may still be mined")
    if isinstance(exc, Web3RPCError):
        message = _rpc_message(exc)
        for pattern, hint in _RPC_HINTS:
            if pattern.search(message):
                return ChainError(f"{what}: {hint.format(sender=sender or 'the sender')} (node: {message})")
        return ChainError(f"{what}: the node refused it: {message}")
    return None


def _rpc_message(exc: Web3RPCError) -> str:
    response = getattr(exc, "rpc_response", None) or {}
    error = response.get("error") if isinstance(response, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return _first_line(message or exc)


def _first_line(value: object) -> str:
    return " ".join(str(value).split())[:300]


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
    attribution: str = ""
    """The AttributionRegistry (model and influence commitments); empty in deployments made before it existed."""
    parameters: str = ""
    """The ProtocolParameters (governed payout parameters); empty in deployments made before it existed."""
    agents: str = ""
    """The AgentRegistry (staked serving agents); empty in deployments made before it existed."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        if not path.exists():
            raise DeploymentMissing(f"no deployment at {path}: run `payable deploy` first")
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
        """Signs and sends ``call`` (a contract function or constructor); returns the tx hash.

        A revert foreseen by gas estimation and any refusal by the node raise ChainError; a lost
        connection stays a ``requests`` error, so that callers with a retry policy can apply it.
        """
        params = {
            "from": account.address,
            "chainId": self.chain_id,
            "nonce": self.w3.eth.get_transaction_count(account.address, "pending") if nonce is None else nonce,
        }
        try:
            tx = call.build_transaction(params)
            signed = account.sign_transaction(tx)
            return self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except (ContractCustomError, ContractLogicError) as exc:
            raise ChainError(f"{label or 'transaction'} would revert: {describe_revert(exc)}") from exc
        except Web3RPCError as exc:
            raise chain_error(exc, label=label or "transaction", sender=account.address) from exc

    def wait(self, tx_hash: bytes, *, label: str = "", timeout_s: float = 120.0) -> TxReceipt:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.02)
        except TimeExhausted as exc:
            raise chain_error(exc, label=label or "transaction") from exc
        if receipt["status"] != 1:
            raise ChainError(f"{label or 'transaction'} reverted on-chain: tx {tx_hash.hex()}")
        return receipt

    def transact(self, account: LocalAccount, call: Any, *, label: str = "") -> TxReceipt:
        """Sends ``call`` and waits for a successful receipt."""
        return self.wait(self.send(account, call, label=label), label=label)

    def mine(self, blocks: int, seconds: int = 0) -> int:
        """Mines ``blocks`` empty blocks on a local anvil node, ``seconds`` apart (0: the node's own clock, so
        a timelock delay can be waited out too); returns the new head.

        Only a development node can mine on request, and only one the operator runs for this purpose:
        anything else (a public chain, a node that is not anvil) is refused with a ChainError.
        """
        client = self.w3.client_version
        if not client.lower().startswith("anvil"):
            raise ChainError(f"`payable mine` needs the local anvil node; {self.rpc_url} is {client}")
        try:
            self.w3.manager.request_blocking("anvil_mine", [hex(blocks)] + ([hex(seconds)] if seconds else []))
        except Web3RPCError as exc:
            raise chain_error(exc, label="anvil_mine") from exc
        return self.w3.eth.block_number


def _custom_errors() -> dict[str, str]:
    """Selector (0x + 8 hex) -> error signature, over every payable contract's ABI."""
    errors: dict[str, str] = {}
    for name in (contracts.OPEN_TOKEN, contracts.DATANET_REGISTRY, contracts.REWARD_DISTRIBUTOR,
                 contracts.TIMELOCK, contracts.GOVERNOR, contracts.ATTRIBUTION_REGISTRY,
                 contracts.PROTOCOL_PARAMETERS, contracts.AGENT_REGISTRY):
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
