"""Helpers for the ingester tests: contributions sent through anvil's unlocked accounts, the log read back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

import contracts
from payable import kafka_log
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines.ingest import IngestOptions
from pipelines.ingest.fetch import Backoff
from schemas import events, topics
from tests.conftest import stack_env

DEPLOYER = dev_account(Role.DEPLOYER.value)
CONTRIBUTOR = dev_account(Role.CONTRIBUTOR.value)
STAKE = 10**18
CONTRIBUTE = function_signature_to_4byte_selector("contribute(uint256,bytes32,string,uint64)")
FAST = IngestOptions(confirmations=0, backoff=Backoff(first_s=0.02, max_s=0.5, attempts=30), rpc_timeout_s=5.0,
                     kafka_timeout_s=10.0)


def rpc(settings: Settings, method: str, params: list) -> object:
    reply = requests.post(settings.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                          timeout=30).json()
    assert "error" not in reply, reply
    return reply["result"]


def open_datanet(chain: Chain, deployment: Deployment, contributions: int) -> int:
    """A datanet, and the contributor funded and approved for ``contributions`` stakes; returns its id."""
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(DEPLOYER, registry.functions.createDatanet("cas://sha256/" + "00" * 32, STAKE, 10_000,
                                                              [dev_account(Role.VALIDATOR.value).address]))
    chain.transact(DEPLOYER, token.functions.transfer(CONTRIBUTOR.address, STAKE * contributions))
    chain.transact(CONTRIBUTOR, token.functions.approve(deployment.registry, STAKE * contributions))
    return registry.functions.datanetCount().call()


def contribute_tx(deployment: Deployment, datanet_id: int, tag: int, nonce: int | None = None) -> dict:
    """An unsigned contribute() call from the contributor (anvil signs for its dev accounts)."""
    content = tag.to_bytes(32, "big")
    data = CONTRIBUTE + encode(["uint256", "bytes32", "string", "uint64"],
                               [datanet_id, content, f"cas://sha256/{content.hex()}", 100 + tag % 1000])
    tx = {"from": CONTRIBUTOR.address, "to": deployment.registry, "data": "0x" + data.hex(), "gas": hex(400_000)}
    if nonce is not None:
        tx["nonce"] = hex(nonce)
    return tx


def signed_contribute(deployment: Deployment, datanet_id: int, tag: int, nonce: int) -> str:
    """A contribute() transaction signed here, as raw hex: anvil_reorg can put the very same one elsewhere."""
    call = contribute_tx(deployment, datanet_id, tag)
    tx = {"to": deployment.registry, "data": call["data"], "gas": 400_000, "nonce": nonce, "value": 0,
          "chainId": deployment.chain_id, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 1}
    return "0x" + CONTRIBUTOR.sign_transaction(tx).raw_transaction.hex()


def contribute(settings: Settings, deployment: Deployment, datanet_id: int, tags: range) -> None:
    """One contribute() transaction per tag, each mined in its own block (automine)."""
    for tag in tags:
        rpc(settings, "eth_sendTransaction", [contribute_tx(deployment, datanet_id, tag)])


def canonical_submissions(chain: Chain, deployment: Deployment) -> dict[str, str]:
    """event id -> block hash of every ContributionSubmitted on the node's canonical chain."""
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    logs = registry.events.ContributionSubmitted().get_logs(from_block=deployment.deploy_block)
    return {f"{chain.chain_id}:0x{log['transactionHash'].hex().removeprefix('0x')}:{log['logIndex']}":
            "0x" + log["blockHash"].hex().removeprefix("0x") for log in logs}


@dataclass
class Log:
    """Everything on one topic, decoded and validated, in log order per partition."""

    records: list[tuple[str, dict]]

    def of(self, event_type: events.EventType) -> list[dict]:
        return [record for name, record in self.records if name == event_type.name]

    def live_submissions(self) -> Counter:
        """(event id, block hash) -> how many times it is live: emitted minus retracted."""
        live: Counter = Counter()
        for name, record in self.records:
            if name == events.CONTRIBUTION_SUBMITTED.name:
                live[(record["event_id"], record["block_hash"])] += 1
            elif name == events.FACT_RETRACTED.name:
                live[(record["retracted_event_id"], record["retracted_block_hash"])] -= 1
        return +live


def read_topic(settings: Settings, topic: str) -> Log:
    records = []
    for partition, end in sorted(kafka_log.end_offsets(settings.kafka_bootstrap, topic).items()):
        for message in kafka_log.read_range(settings.kafka_bootstrap, topic, partition, 0, end):
            event_type, record = events.decode(message.value, message.headers)
            records.append((event_type.name, record))
    return Log(records)


def read_facts(settings: Settings) -> Log:
    return read_topic(settings, topics.CHAIN_FACTS)


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment under which ``payable`` reaches this test's stack."""
    return {**os.environ, **stack_env(settings), "PAYABLE_CONFIRMATIONS": "0"}


def payable(settings: Settings, *args: str) -> subprocess.Popen:
    """Starts the real ``payable`` command line against this test's stack, in its own process group."""
    return subprocess.Popen([str(Path(sys.executable).with_name("payable")), *args], env=cli_env(settings),
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
