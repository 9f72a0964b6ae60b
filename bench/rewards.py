"""Rewards bench: gas per epoch and per claim on a real anvil, push-mode gas, Merkle build time at scale.

Run from the repository root: ``.venv/bin/python bench/rewards.py [--sizes 10000,100000,1000000] [--claims 20]``.
It starts its own anvil (fresh state in a temp dir), deploys payable's contracts and measures, with proofs
from a 100,000-leaf tree (17 levels):
- publishEpoch gas;
- claim gas in epoch 1, where every account is new (a new OPEN holder), and in epoch 2 for the same accounts
  returning (they hold OPEN): the claims are consecutive leaf indexes, so the first one of each epoch fills
  a fresh claimed-bitmap word (reported apart) and the others set a bit in a written word;
- where one new account's claim spends its gas (``debug_traceTransaction`` with the call tracer): the 21,000
  base, calldata (the proof's share apart), the OPEN transfer inside the token, the distributor's own work;
- push mode: one claimBatch of 64 accounts, gas per account, new and returning;
- DatanetRegistry.contribute gas, a contributor's first and second contribution;
then the wall and CPU time to build the tree for each size (leaf encoding, hashing, sorting, all inner
nodes: every proof is in the tree) and to read one proof off it. The load average is printed too: on a
shared 2-core machine the wall time depends on what else runs. Prints rich tables, writes ``bench/out/rewards.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from web3 import Web3

import contracts
from contracts.deploy import deploy
from payable import services
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from pipelines.rewards import merkle

OUT = Path(__file__).parent / "out"
GAS_TREE = 100_000
PUSH_BATCH = 64
DEPLOYER, OPERATOR, VALIDATOR, CONTRIBUTOR = (dev_account(r.value) for r in (Role.DEPLOYER, Role.OPERATOR,
                                                                            Role.VALIDATOR, Role.CONTRIBUTOR))


def random_payouts(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    accounts = [f"0x{rng.getrandbits(160):040x}" for _ in range(n)]
    return accounts, [rng.randrange(10**15, 10**21) for _ in range(n)]


def gas_figures(chain: Chain, deployment: Deployment, claims: int) -> dict:
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    accounts, amounts = random_payouts(GAS_TREE, seed=1)
    accounts.sort()  # an epoch's leaf indexes follow its accounts in ascending order
    word = random.Random(2).randrange(GAS_TREE // 256 - 1)  # a bitmap word whose indexes all exist
    singles = range(256 * word, 256 * word + claims)
    pushed = range(256 * (word + 1), 256 * (word + 1) + PUSH_BATCH)
    figures: dict = {"tree_leaves": GAS_TREE}
    for epoch_id, label in ((1, "new"), (2, "returning")):
        epoch_amounts = [a + epoch_id for a in amounts]
        tree = merkle.build_tree(accounts, epoch_amounts)
        total = sum(epoch_amounts)
        chain.transact(DEPLOYER, token.functions.transfer(distributor.address, total), label="fund")
        figures[f"publish_epoch_{epoch_id}"] = chain.transact(
            OPERATOR, distributor.functions.publishEpoch(epoch_id, tree.root, total), label="publish")["gasUsed"]
        receipts = [chain.transact(OPERATOR, distributor.functions.claim(
            epoch_id, i, Web3.to_checksum_address(accounts[i]), epoch_amounts[i], tree.proof(i)), label="claim")
            for i in singles]
        gas = [r["gasUsed"] for r in receipts[1:]]
        figures[f"claim_{label}_fresh_word"] = receipts[0]["gasUsed"]
        figures[f"claim_{label}"] = {"mean": statistics.mean(gas), "min": min(gas), "max": max(gas), "n": len(gas)}
        if label == "new":
            figures["claim_new_breakdown"] = claim_breakdown(chain, receipts[-1])
        batch = [(i, Web3.to_checksum_address(accounts[i]), epoch_amounts[i], tree.proof(i)) for i in pushed]
        receipt = chain.transact(OPERATOR, distributor.functions.claimBatch(epoch_id, batch), label="claimBatch")
        figures[f"push_{label}_per_account"] = receipt["gasUsed"] / len(batch)
        figures["proof_levels"] = len(tree.proof(singles[0]))
    figures["contribute"] = contribute_gas(chain, deployment)
    return figures


def claim_breakdown(chain: Chain, receipt) -> dict:
    """Where one claim's gas goes: intrinsic (base, calldata with the proof apart), the OPEN transfer (the token
    call's own gas, from the call tracer) and the rest, which is the distributor's work (three cold reads:
    root, bitmap word, outstanding; two writes; the leaf and proof hashing; the event; ABI decoding)."""
    tx_hash = "0x" + receipt["transactionHash"].hex().removeprefix("0x")
    data = bytes(chain.w3.eth.get_transaction(tx_hash)["input"])
    calldata = sum(4 if b == 0 else 16 for b in data)
    proof_bytes = data[4 + 6 * 32:]  # after the selector, four arguments, the proof's offset and length
    trace = chain.w3.provider.make_request("debug_traceTransaction", [tx_hash, {"tracer": "callTracer"}])["result"]
    transfer = sum(int(call["gasUsed"], 16) for call in trace.get("calls", []))
    return {"total": receipt["gasUsed"], "base": 21_000, "calldata": calldata,
            "calldata_proof": sum(4 if b == 0 else 16 for b in proof_bytes), "proof_hashes": len(proof_bytes) // 32,
            "open_transfer": transfer, "distributor": receipt["gasUsed"] - 21_000 - calldata - transfer}


def contribute_gas(chain: Chain, deployment: Deployment) -> dict:
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(DEPLOYER, registry.functions.createDatanet("bench://net", 10**18, 10_000, [VALIDATOR.address]))
    datanet_id = registry.functions.datanetCount().call()
    chain.transact(DEPLOYER, token.functions.transfer(CONTRIBUTOR.address, 10 * 10**18))
    chain.transact(CONTRIBUTOR, token.functions.approve(deployment.registry, 10 * 10**18))
    used = []
    for i in range(2):
        call = registry.functions.contribute(datanet_id, os.urandom(32), f"cas://sha256/bench-{i}", 100)
        used.append(chain.transact(CONTRIBUTOR, call, label="contribute")["gasUsed"])
    return {"first": used[0], "subsequent": used[1]}


def build_times(sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        accounts, amounts = random_payouts(n, seed=n)
        start, cpu = time.perf_counter(), time.process_time()
        tree = merkle.build_tree(accounts, amounts)
        built, cpu = time.perf_counter() - start, time.process_time() - cpu
        sample = range(0, n, max(1, n // 1000))
        start = time.perf_counter()
        for i in sample:
            tree.proof(i)
        per_proof = (time.perf_counter() - start) / len(sample)
        rows.append({"leaves": n, "build_s": built, "cpu_s": cpu, "proof_us": per_proof * 1e6,
                     "levels": len(tree.proof(0)), "tree_mb": tree.nodes.nbytes / 2**20})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="tree sizes to time, comma-separated")
    parser.add_argument("--claims", type=int, default=20, help="single claims to measure per epoch")
    args = parser.parse_args()
    console = Console()
    console.print(f"[bold]command:[/] {shlex.join(sys.orig_argv)}  (cpus: {os.cpu_count()}, "
                  f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")

    with services.scratch_chain() as settings:
        chain = Chain(settings.rpc_url)
        gas = gas_figures(chain, deploy(chain, DEPLOYER, OPERATOR.address), args.claims)

    table = Table(title=f"gas on anvil (cancun), proofs of {gas['proof_levels']} hashes from a "
                        f"{gas['tree_leaves']:,}-leaf tree")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("publishEpoch (first / second epoch)", f"{gas['publish_epoch_1']:,} / {gas['publish_epoch_2']:,}",
                  "<= 60,000")
    for label in ("new", "returning"):
        c = gas[f"claim_{label}"]
        table.add_row(f"claim, {label} account, bitmap word already written (mean of {c['n']}; min-max)",
                      f"{c['mean']:,.0f} ({c['min']:,}-{c['max']:,})", "<= 80,000")
        table.add_row(f"claim, {label} account, first of its 256-leaf bitmap word",
                      f"{gas[f'claim_{label}_fresh_word']:,}", "")
    for label in ("new", "returning"):
        table.add_row(f"push: claimBatch of {PUSH_BATCH}, per {label} account",
                      f"{gas[f'push_{label}_per_account']:,.0f}", "")
    table.add_row("DatanetRegistry.contribute, first / subsequent",
                  f"{gas['contribute']['first']:,} / {gas['contribute']['subsequent']:,}", "")
    console.print(table)
    b = gas["claim_new_breakdown"]
    console.print(f"one new account's claim, {b['total']:,} gas: base {b['base']:,} + calldata {b['calldata']:,} "
                  f"(the {b['proof_hashes']}-hash proof {b['calldata_proof']:,}) + OPEN transfer "
                  f"{b['open_transfer']:,} + distributor {b['distributor']:,}")

    sizes = [int(s) for s in args.sizes.split(",") if s]
    builds = build_times(sizes)
    table = Table(title=f"Merkle tree build (all proofs included), {os.cpu_count()} cpus, load "
                        f"{os.getloadavg()[0]:.1f}")
    for column in ("leaves", "build s (wall)", "cpu s, all threads", "one proof µs", "levels", "tree MB"):
        table.add_column(column, justify="right")
    for row in builds:
        table.add_row(f"{row['leaves']:,}", f"{row['build_s']:.2f}", f"{row['cpu_s']:.2f}", f"{row['proof_us']:.1f}",
                      str(row["levels"]), f"{row['tree_mb']:.0f}")
    console.print(table)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rewards.json").write_text(json.dumps({"command": sys.orig_argv, "gas": gas, "builds": builds},
                                                 indent=2) + "\n")


if __name__ == "__main__":
    main()
