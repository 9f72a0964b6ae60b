"""Serving-agent bench: what staking, slashing and signed usage cost, on a real anvil.

Run from the repository root: ``.venv/bin/python -m bench.agents [--events 500]``.
It starts its own anvil, deploys payable's contracts and measures the gas of each AgentRegistry step an agent or a
validator pays (approve + register, unstake, slash with a reason and an evidence hash, withdraw), and the CPU time
of signing one usage event (``ServingAgent.sign``: on every served request) and of checking one
(``AgentBook.refusal``: signature recovery, once per event per epoch close). Prints a rich table, writes
``bench/out/agents.json`` with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import contracts
from contracts.deploy import deploy
from payable import services
from payable.agents import fund_local_agent
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from pipelines.rewards.agents import AgentBook
from serving.agent import ServingAgent
from serving.usage import usage_event
from tests.chain_helpers import advance_time

OUT = Path(__file__).parent / "out"
DEPLOYER, OPERATOR, VALIDATOR = (dev_account(r.value) for r in (Role.DEPLOYER, Role.OPERATOR, Role.VALIDATOR))
AGENT, SECOND = dev_account(Role.AGENT.value), dev_account(11)


def gas_figures(chain: Chain, deployment: Deployment) -> dict:
    registry = chain.contract(contracts.AGENT_REGISTRY, deployment.agents)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    stake = registry.functions.minimumStake().call()
    out = {}
    for agent in (AGENT, SECOND):
        fund_local_agent(chain, deployment, DEPLOYER, agent.address, stake)
        out["approve"] = chain.transact(agent, token.functions.approve(registry.address, stake))["gasUsed"]
        out["register"] = chain.transact(agent, registry.functions.register("http://127.0.0.1:8000", stake))[
            "gasUsed"]
    out["unstake"] = chain.transact(SECOND, registry.functions.unstake())["gasUsed"]
    out["slash"] = chain.transact(VALIDATOR, registry.functions.slash(
        AGENT.address, stake // 2, "phantom_citation,duplicated_request", b"\xe5" * 32))["gasUsed"]
    advance_time(chain, registry.functions.unstakeDelay().call())
    out["withdraw"] = chain.transact(SECOND, registry.functions.withdraw())["gasUsed"]
    return out


def signing_figures(events: int) -> dict:
    agent = ServingAgent(AGENT)
    book = AgentBook(staked=frozenset({agent.address}))
    sources = [{"datanet_id": 1, "contribution_id": i, "contributor": "0x" + "b2" * 20, "chunk_id": f"{i}:0",
                "dataset_version": 3, "score": 0.5} for i in range(4)]
    unsigned = [usage_event(request_id=f"req-{i}", model="dn-1", adapters=[("ad-1", 1, 3, 1.0)],
                            base_model_hash="0x" + "ba" * 32, prompt_tokens=90, completion_tokens=16, latency_s=0.05,
                            caller=None, finish_reason="stop", retrieved_sources=sources,
                            messages=[("user", "What makes bread rise?")], answer="Yeast.", source_words=[40] * 4)
                for i in range(events)]
    start = time.process_time()
    signed = [agent.sign(e) for e in unsigned]
    sign_cpu = time.process_time() - start
    start = time.process_time()
    refused = [book.refusal(e) for e in signed]
    check_cpu = time.process_time() - start
    assert not any(refused)
    return {"events": events, "sign_cpu_ms_per_event": sign_cpu / events * 1e3,
            "check_cpu_ms_per_event": check_cpu / events * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="usage events to sign and check")
    args = parser.parse_args()
    console = Console()
    load = os.getloadavg()
    console.print(f"[bold]command:[/] {shlex.join(sys.orig_argv)}  (cpus: {os.cpu_count()}, "
                  f"load: {' '.join(f'{x:.1f}' for x in load)})")
    with services.scratch_chain() as settings:
        chain = Chain(settings.rpc_url)
        gas = gas_figures(chain, deploy(chain, DEPLOYER, OPERATOR.address, agent_validators=[VALIDATOR.address]))
    cpu = signing_figures(args.events)

    table = Table(title="serving agents on anvil (cancun)")
    table.add_column("operation")
    table.add_column("figure", justify="right")
    for name in ("approve", "register", "unstake", "slash", "withdraw"):
        table.add_row(f"{name} (gas)", f"{gas[name]:,}")
    table.add_row(f"sign one usage event, CPU (ms, mean of {cpu['events']})", f"{cpu['sign_cpu_ms_per_event']:.2f}")
    table.add_row(f"check one usage event's signature, CPU (ms, mean of {cpu['events']})",
                  f"{cpu['check_cpu_ms_per_event']:.2f}")
    console.print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "agents.json").write_text(json.dumps({"command": sys.orig_argv, "load_average": load, "gas": gas,
                                                 "cpu": cpu}, indent=2) + "\n")


if __name__ == "__main__":
    main()
