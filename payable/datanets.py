"""The contributor's path onto the chain: create a datanet, submit files to it.

Every check that can fail is made before any transaction is sent (missing, empty or oversized file,
unknown datanet, too little OPEN balance or allowance), so a contributor never pays gas for a
submission that would revert, and gets an error that says what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.logs import DISCARD

import contracts
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.errors import PayableError

FORMATS = ("text", "jsonl")


class ContributionError(PayableError, ValueError):
    """A submission that payable refuses before sending any transaction."""


@dataclass(frozen=True)
class DatanetSpec:
    """What a datanet accepts: stored off-chain as JSON metadata, referenced by its URI on-chain."""

    name: str
    format: str = "text"
    required_fields: tuple[str, ...] = ()
    description: str = ""
    eval_queries: tuple[str, ...] = ()
    """What the datanet's model should get better at: the queries influence is measured against. They
    travel with the spec (content-addressed, named on-chain), so a replay of the log finds them."""
    training: dict = field(default_factory=dict, hash=False)
    """Default training settings for the datanet's adapters (names as in ``pipelines.training.arguments
    .SETTINGS``, e.g. ``{"base_model": "smollm2-135m-instruct", "epochs": 2}``); a launch may override each."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.required_fields and self.format != "jsonl":
            raise ValueError("required_fields applies to the jsonl format only")

    def to_json(self) -> bytes:
        doc = {"name": self.name, "format": self.format, "required_fields": list(self.required_fields),
               "description": self.description}
        if self.eval_queries:
            doc["eval_queries"] = list(self.eval_queries)
        if self.training:
            doc["training"] = dict(self.training)
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DatanetSpec:
        doc = json.loads(data)
        return cls(doc["name"], doc.get("format", "text"), tuple(doc.get("required_fields", ())),
                   doc.get("description", ""), tuple(doc.get("eval_queries", ())), dict(doc.get("training", {})))


@dataclass(frozen=True)
class Submitted:
    contribution_id: int
    datanet_id: int
    content_hash: str
    uri: str
    size: int
    tx_hash: str
    block_number: int


def create_datanet(
    chain: Chain, deployment: Deployment, store: ContentStore, owner: LocalAccount, spec: DatanetSpec, *,
    min_stake: int, max_contribution_size: int, validators: list[str], permissioned: bool = False,
) -> int:
    """Creates a datanet with ``spec`` as its metadata; returns the new datanet id.

    A ``permissioned`` datanet is trained on only by holders of its owner's grant (payable.access)."""
    _, metadata_uri = store.put(spec.to_json())
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    receipt = chain.transact(
        owner,
        registry.functions.createDatanet(metadata_uri, min_stake, max_contribution_size,
                                         [Web3.to_checksum_address(v) for v in validators], permissioned),
        label="createDatanet",
    )
    (event,) = registry.events.DatanetCreated().process_receipt(receipt, errors=DISCARD)
    return event["args"]["datanetId"]


def contribute(
    chain: Chain, deployment: Deployment, store: ContentStore, contributor: LocalAccount,
    datanet_id: int, files: list[Path],
) -> list[Submitted]:
    """Stores each file content-addressed, checks everything, then submits one transaction per file."""
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    owner, max_size, *_ = registry.functions.datanets(datanet_id).call()
    if int(owner, 16) == 0:
        raise ContributionError(f"unknown datanet {datanet_id}")
    payloads = [_read_checked(path, max_size) for path in files]
    stake = registry.functions.requiredStake(datanet_id).call()
    needed = stake * len(payloads)
    balance = token.functions.balanceOf(contributor.address).call()
    if balance < needed:
        raise ContributionError(
            f"insufficient OPEN: {len(payloads)} contribution(s) need {needed} (stake {stake} each), "
            f"{contributor.address} holds {balance}"
        )
    allowance = token.functions.allowance(contributor.address, deployment.registry).call()
    if allowance < needed:
        chain.transact(contributor, token.functions.approve(deployment.registry, needed), label="approve OPEN")

    nonce = chain.w3.eth.get_transaction_count(contributor.address, "pending")
    pending = []
    for offset, data in enumerate(payloads):
        content_hash, uri = store.put(data)
        call = registry.functions.contribute(datanet_id, bytes.fromhex(content_hash[2:]), uri, len(data))
        pending.append((content_hash, uri, len(data), chain.send(contributor, call, nonce=nonce + offset,
                                                                 label="contribute")))
    submitted = []
    for content_hash, uri, size, tx_hash in pending:
        receipt = chain.wait(tx_hash, label="contribute")
        (event,) = registry.events.ContributionSubmitted().process_receipt(receipt, errors=DISCARD)
        submitted.append(Submitted(event["args"]["contributionId"], datanet_id, content_hash, uri, size,
                                   "0x" + tx_hash.hex().removeprefix("0x"), receipt["blockNumber"]))
    return submitted


def _read_checked(path: Path, max_size: int) -> bytes:
    """The file's bytes, or a ContributionError saying why it cannot be a contribution."""
    if path.is_dir():
        raise ContributionError(f"{path} is a directory: give the files in it (e.g. {path}/*.txt)")
    if not path.exists():
        raise ContributionError(f"no such file: {path}")
    if not path.is_file():
        raise ContributionError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ContributionError(f"empty file: {path}")
    if size > max_size:
        raise ContributionError(f"{path} is {size} bytes, over the datanet's limit of {max_size} bytes")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ContributionError(f"cannot read {path}: {exc.strerror}") from None
