"""Benchmark: backfill N ContributionSubmitted events from a local anvil into Kafka, against web3.py.

Seeds N real ContributionSubmitted logs from the real DatanetRegistry through a bench-only helper contract
(compiled here with solc-js) that submits 180 contributions per transaction, runs the ingester's backfill
(``ingest_until_head``: fetch, decode, validate, produce, checkpoint, all in Kafka transactions), then
times a plain web3.py ``get_logs`` + decode loop over the same blocks, and prints both rates.

    .venv/bin/python -m bench.ingest [--events 100000]

anvil runs here without ``--state``: the local service dumps its whole state every 2 s, which at 100k
contributions (a 340 MB file) stalls the node.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

import contracts
from bench.runner import load_average
from contracts.deploy import deploy
from payable import services
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines.ingest import IngestOptions, ingest_until_head

OUT = Path(__file__).resolve().parent / "out"
PER_TX = 180  # about 14M gas: under the 15M target, so the base fee does not climb
SEEDER = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;
interface IRegistry { function contribute(uint256, bytes32, string calldata, uint64) external returns (uint256); }
interface IToken { function approve(address, uint256) external returns (bool); }
contract Seeder {
    bytes16 private constant HEX = "0123456789abcdef";
    function seed(IRegistry registry, IToken token, uint256 datanetId, uint256 start, uint256 count) external {
        token.approve(address(registry), type(uint256).max);
        for (uint256 i = start; i < start + count; ++i) {
            bytes32 h = keccak256(abi.encode(i));
            registry.contribute(datanetId, h, string.concat("cas://sha256/", _hex(h)), uint64(100 + i % 900));
        }
    }
    function _hex(bytes32 value) private pure returns (string memory) {
        bytes memory out = new bytes(64);
        for (uint256 i = 0; i < 32; ++i) {
            out[2 * i] = HEX[uint8(value[i]) >> 4];
            out[2 * i + 1] = HEX[uint8(value[i]) & 0x0f];
        }
        return string(out);
    }
}
"""
COMPILE = """
const solc = require("solc");
const out = JSON.parse(solc.compile(JSON.stringify({language: "Solidity",
  sources: {"S.sol": {content: process.argv[1]}},
  settings: {evmVersion: "cancun", optimizer: {enabled: true, runs: 200},
             outputSelection: {"*": {"*": ["abi", "evm.bytecode.object"]}}}})));
const c = out.contracts["S.sol"].Seeder;
console.log(JSON.stringify({abi: c.abi, bytecode: "0x" + c.evm.bytecode.object}));
"""


def seeder_artifact(cache: Path) -> dict:
    """The helper contract, compiled once with the solc-js that npm installed."""
    if not cache.exists():
        out = subprocess.run(["node", "-e", COMPILE, SEEDER], capture_output=True, text=True, check=True,
                             cwd=services.REPO_ROOT, env={"NODE_PATH": str(services.REPO_ROOT / "node_modules"),
                                                          "PATH": "/usr/bin:/usr/local/bin:/bin"})
        cache.write_text(out.stdout)
    return json.loads(cache.read_text())


def seed(chain: Chain, deployment: Deployment, events: int, console: Console) -> None:
    deployer = dev_account(Role.DEPLOYER.value)
    art = seeder_artifact(Path(tempfile.gettempdir()) / "payable-bench-seeder.json")
    receipt = chain.transact(deployer, chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor())
    seeder = chain.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(deployer, token.functions.transfer(seeder.address, events * 10**18))
    chain.transact(deployer, registry.functions.createDatanet("cas://bench", 10**18, 10**6, [deployer.address]))
    sender = dev_account(Role.CONTRIBUTOR.value)
    nonce = chain.w3.eth.get_transaction_count(sender.address)
    hashes = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("seeding contributions", total=events)
        for start in range(0, events, PER_TX):
            count = min(PER_TX, events - start)
            tx = seeder.functions.seed(deployment.registry, deployment.token, 1, start, count).build_transaction(
                {"from": sender.address, "nonce": nonce, "gas": 16_000_000, "chainId": chain.chain_id,
                 "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 1})
            hashes.append(chain.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
            nonce += 1
            progress.advance(task, count)
        # Automine mines as transactions arrive; one that came while a block was being built waits for
        # the next arrival, so mine until the pool is empty.
        while int(chain.w3.provider.make_request("txpool_status", [])["result"]["pending"], 16):
            chain.w3.provider.make_request("evm_mine", [])
        for tx_hash in hashes:
            chain.wait(tx_hash)


def web3_loop(chain: Chain, deployment: Deployment, first: int, last: int, span: int) -> int:
    """The plain way: web3.py's get_logs with its own decoding, range by range."""
    event = chain.contract(contracts.DATANET_REGISTRY, deployment.registry).events.ContributionSubmitted()
    return sum(len(event.get_logs(from_block=start, to_block=min(start + span - 1, last)))
               for start in range(first, last + 1, span))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    console = Console()
    data = Path(tempfile.mkdtemp(prefix="payable-bench-ingest-"))
    anvil_port, kafka_port = services.free_port(), services.free_port()
    settings = replace(Settings.from_env(data), anvil_port=anvil_port, kafka_port=kafka_port, local_chain=False,
                       rpc_url=f"http://127.0.0.1:{anvil_port}", kafka_bootstrap=f"127.0.0.1:{kafka_port}")
    broker = next(s for s in services.local_services(replace(settings, local_kafka=True)) if s.name == "broker")
    anvil = subprocess.Popen([str(services.anvil_binary()), "--host", "127.0.0.1", "--port", str(anvil_port),
                              "--hardfork", "cancun", "--silent"], start_new_session=True)
    try:
        while not services.anvil_ready(anvil_port):
            time.sleep(0.05)
        services.start(broker, settings)
        chain = Chain(settings.rpc_url, timeout_s=300)
        deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address)
        # A running ingester meets a warm broker: its topics, and the transaction coordinator a fresh broker
        # is still loading ("Coordinator load in progress"), are set up by one untimed pass over the deploy.
        ingest_until_head(settings, deployment, IngestOptions(confirmations=0))
        started = time.monotonic()
        seed(chain, deployment, args.events, console)
        head = chain.w3.eth.block_number
        console.print(f"seeded {args.events:,} contributions in {head} blocks in {time.monotonic() - started:.1f} s")

        load, cpu = load_average(), time.process_time()
        with console.status("payable ingest: backfill into Kafka"):
            report = ingest_until_head(settings, deployment, IngestOptions(confirmations=0))
        cpu = time.process_time() - cpu
        ours = report.facts["ContributionSubmitted"]
        assert ours == args.events, f"ingested {ours} of {args.events}"
        console.print(f"payable ingest : {ours:,} ContributionSubmitted in {report.elapsed_s:.2f} s = "
                      f"[bold]{report.events_per_s:,.0f} events/s[/bold] (fetch, decode, validate, Kafka "
                      f"transactions with checkpoints; {report.spans} spans; {broker.binary_name}); "
                      f"{cpu / ours * 1e6:.0f} µs CPU per event in this process; load average {load}")
        with console.status("web3.py get_logs + decode loop"):
            begun = time.monotonic()
            plain = web3_loop(chain, deployment, deployment.deploy_block, head, 2_000)
            plain_s = time.monotonic() - begun
        console.print(f"web3.py loop   : {plain:,} decoded in {plain_s:.2f} s = {plain / plain_s:,.0f} events/s "
                      f"(no Kafka at all)")
        console.print(f"ratio          : [bold]{report.events_per_s / (plain / plain_s):.1f}x[/bold]")
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "ingest.json").write_text(json.dumps({
            "events": ours, "broker": broker.binary_name, "blocks": head, "load_average": load,
            "payable_events_per_s": report.events_per_s, "payable_s": report.elapsed_s, "payable_cpu_s": cpu,
            "spans": report.spans, "web3_events_per_s": plain / plain_s, "web3_s": plain_s}, indent=1))
    finally:
        services.stop(broker, settings)
        anvil.terminate()
        anvil.wait(10)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
