"""A validator catches a serving agent's bad report and slashes it, end to end on real anvil + broker + Lance.

The agent stakes on-chain, its signed usage events go to the log as ``payable serve`` writes them, the dataset
version its citations name is a real Lance version; ``payable agents verify`` runs as a separate process. The
registry's facts reach the log through the real ingester, and the usage rule then refuses the slashed agent's
later usage.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_utils import keccak
from web3.logs import DISCARD

import contracts
from contracts.deploy import DeployParams
from payable.agents import agent_state, fund_local_agent, register_agent
from payable.keys import Role, dev_account
from pipelines.ingest import ingest_until_head
from pipelines.rewards import outbox
from pipelines.rewards.usage import load_usage, payable_usage
from pipelines.validate.materialize import commit, dataset_uri
from schemas import rewards as schema
from schemas.datasets import CONTRIBUTION_ROW
from schemas.usage import USAGE_EVENT
from serving.agent import ServingAgent
from tests.test_ingest_support import FAST
from tests.test_rewards_emitter import run_cli
from tests.test_rewards_exactly_once import send_all
from tests.test_usage_rewards import call

DEPLOYER, AGENT, STRANGER = dev_account(Role.DEPLOYER.value), dev_account(Role.AGENT.value), dev_account(4)
WRITER = "0x" + "b2" * 20
MINIMUM = DeployParams().agent_minimum_stake


def materialize_version(settings) -> int:
    """Datanet 1's first dataset version, holding contribution 2 (by WRITER) only."""
    import pyarrow as pa

    rows = pa.Table.from_pylist([{"contribution_id": 2, "datanet_id": 1, "contributor": WRITER, "content_hash": "0x",
                                  "text": "bread rises", "size": 11, "block_number": 1, "fact_event_id": "f-2",
                                  "verdict_id": "v-2"}], schema=CONTRIBUTION_ROW)
    return commit(dataset_uri(settings.lance_dir, 1), rows, [], run_id="run-1", offsets={0: (0, 1)})


def source(contribution_id: int, version: int) -> dict:
    return {"datanet_id": 1, "contribution_id": contribution_id, "contributor": WRITER,
            "chunk_id": f"{contribution_id}:0", "dataset_version": version, "score": 0.5}


def test_a_phantom_citation_is_found_the_agent_slashed_and_its_later_usage_not_paid(stack, chain, deployment):
    agent = ServingAgent(AGENT, stack, ttl_s=0)  # what `payable serve` shows in /metrics and --status
    assert agent.staked() is False
    fund_local_agent(chain, deployment, DEPLOYER, AGENT.address, MINIMUM)
    register_agent(chain, deployment, AGENT, "http://127.0.0.1:8000")
    assert agent.staked() is True
    version = materialize_version(stack)
    honest = agent.sign(call("req-honest", sources=[source(2, version)]))
    phantom = agent.sign(call("req-phantom", sources=[source(99, version)]))
    send_all(stack, USAGE_EVENT, [honest, phantom], key=lambda r: r["event_id"].encode())

    checked = run_cli(stack, "agents", "verify", agent.address)
    assert checked.returncode == 1 and "rerun with --slash" in checked.stderr, checked.stderr
    findings = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [(f["usage_event_id"], f["check"]) for f in findings[:-1]] == [(phantom["event_id"], "phantom_citation")]
    assert findings[-1]["reports"] == 2 and agent_state(chain, deployment, AGENT.address).status == "staked"

    refused = run_cli(stack, "agents", "verify", agent.address, "--slash",
                      env={"PAYABLE_VALIDATOR_KEY": STRANGER.key.hex()})
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "does not hold the AgentRegistry's validator role" in refused.stderr
    assert agent_state(chain, deployment, AGENT.address).status == "staked", "a non-validator slashes nothing"

    slashed = run_cli(stack, "agents", "verify", agent.address, "--slash")
    assert slashed.returncode == 1, slashed.stderr
    result = json.loads(slashed.stdout.splitlines()[-1])
    evidence = Path(result["evidence"]).read_bytes().strip()
    assert result["evidence_hash"] == "0x" + keccak(evidence).hex(), "the file is what the on-chain hash names"
    registry = chain.contract(contracts.AGENT_REGISTRY, deployment.agents)
    (event,) = registry.events.AgentSlashed().process_receipt(
        chain.w3.eth.get_transaction_receipt(result["tx_hash"]), errors=DISCARD)
    assert (event["args"]["amount"], event["args"]["reason"]) == (MINIMUM, "phantom_citation")
    assert agent_state(chain, deployment, AGENT.address).status == "slashed" and agent.staked() is False

    ingest_until_head(stack, deployment, FAST)
    later = agent.sign(call("req-later"))
    send_all(stack, USAGE_EVENT, [later], key=lambda r: r["event_id"].encode())
    usage = load_usage(stack, deployment, {}, outbox.committed(stack.kafka_bootstrap, (schema.USAGE_ALLOCATED,)))
    assert usage.agents.slashed == {agent.address}
    _, excluded = payable_usage(usage, {})
    assert {x.usage_event_id: x.reason for x in excluded}[later["event_id"]] == f"agent_slashed: {agent.address}"
