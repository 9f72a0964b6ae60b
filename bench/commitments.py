"""Commitments bench: gas of a model and an influence commitment, and the off-chain cost of verifying.

Run from the repository root: ``.venv/bin/python bench/commitments.py [--sizes 10,10000] [--verify 10000]``.
It starts its own anvil, deploys payable's contracts and, for each size n, commits a model whose dataset
has n contributions and an influence run over the same n (gas from the receipts: the goal is <= 80,000
whatever n), then links a published epoch to those runs (``linkEpoch``). Then the verifier's own work for a
run of ``--verify`` contributions: rebuilding the dataset and score trees from their rows (as ``payable
verify`` does from the projections) and checking every contribution's two Merkle proofs, per contribution;
plus one on-chain read of a record hash (eth_call).
Prints rich tables and writes ``bench/out/commitments.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import contracts
from contracts.deploy import deploy
from payable import services
from payable.chain import Chain
from payable.keys import Role, dev_account
from pipelines.commitments import trees
from pipelines.commitments.records import InfluenceCommitment, ModelCommitment, hexed
from pipelines.rewards.merkle import build_tree, process_proof, row_leaf
from pipelines.rewards.runs import run_ids

OUT = Path(__file__).parent / "out"
GAS_GOAL = 80_000
DEPLOYER, OPERATOR, TRAINER = (dev_account(r.value) for r in (Role.DEPLOYER, Role.OPERATOR, Role.TRAINER))


def rows(n: int, seed: int) -> tuple[list[int], list[str], list[float]]:
    rng = random.Random(seed)
    ids = list(range(1, n + 1))
    return ids, [f"0x{rng.getrandbits(256):064x}" for _ in ids], [rng.gauss(0, 1e-3) for _ in ids]


def commit_gas(chain: Chain, attribution, n: int) -> dict:
    ids, hashes, scores = rows(n, seed=n)
    adapter = f"ad-bench-{n}"
    model = ModelCommitment(adapter, 1, n, hexed(trees.dataset_tree(ids, hashes).root), "0x" + "11" * 32,
                            "0x" + "22" * 32, "0x" + "33" * 32, "0x" + "44" * 32, n)
    run = InfluenceCommitment(f"1:{n}:{adapter}:tracin", adapter, "tracin",
                              hexed(trees.scores_tree(ids, scores).root), n)
    m = chain.transact(TRAINER, attribution.functions.commitModel(*model.args()), label="commitModel")
    r = chain.transact(TRAINER, attribution.functions.commitInfluence(*run.args()), label="commitInfluence")
    return {"contributions": n, "commit_model": m["gasUsed"], "commit_influence": r["gasUsed"], "run": run.run}


def link_gas(chain: Chain, deployment, attribution, runs: list[str]) -> int:
    """Gas of linking a published epoch to ``runs`` (all committed)."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    tree = build_tree([OPERATOR.address], [10])
    chain.transact(DEPLOYER, token.functions.transfer(distributor.address, 10), label="fund")
    chain.transact(OPERATOR, distributor.functions.publishEpoch(1, tree.root, 10), label="publishEpoch")
    return chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids(runs)), label="linkEpoch")["gasUsed"]


def verify_times(chain: Chain, attribution, n: int) -> dict:
    ids, hashes, scores = rows(n, seed=7)
    start = time.perf_counter()
    dataset, scored = trees.dataset_tree(ids, hashes), trees.scores_tree(ids, scores)
    built = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        assert process_proof(row_leaf(trees.dataset_row(ids[i], hashes[i])), dataset.proof(i)) == dataset.root
        assert process_proof(row_leaf(trees.score_row(ids[i], scores[i])), scored.proof(i)) == scored.root
    proofs = time.perf_counter() - start
    start = time.perf_counter()
    reads = 20
    for _ in range(reads):
        attribution.functions.modelRecord(bytes(32)).call()
    read = (time.perf_counter() - start) / reads
    return {"contributions": n, "trees_s": built, "proofs_s": proofs, "per_contribution_us": (built + proofs) / n * 1e6,
            "proofs_per_contribution_us": proofs / n * 1e6, "record_read_ms": read * 1e3,
            "levels": len(dataset.proof(0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,10000", help="contributions per commitment, comma-separated")
    parser.add_argument("--verify", type=int, default=10_000, help="contributions of the verified run")
    args = parser.parse_args()
    console = Console()
    console.print(f"[bold]command:[/] {shlex.join(sys.orig_argv)}  (cpus: {os.cpu_count()}, "
                  f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    with services.scratch_chain() as settings:
        chain = Chain(settings.rpc_url)
        deployment = deploy(chain, DEPLOYER, OPERATOR.address, attributor=TRAINER.address)
        attribution = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
        gas = [commit_gas(chain, attribution, int(n)) for n in args.sizes.split(",") if n]
        link = link_gas(chain, deployment, attribution, [row["run"] for row in gas])
        verify = verify_times(chain, attribution, args.verify)

    table = Table(title="AttributionRegistry gas on anvil (cancun)")
    for column in ("contributions", "commitModel", "commitInfluence", "goal"):
        table.add_column(column, justify="right")
    for row in gas:
        table.add_row(f"{row['contributions']:,}", f"{row['commit_model']:,}", f"{row['commit_influence']:,}",
                      f"<= {GAS_GOAL:,}")
    console.print(table)
    console.print(f"linkEpoch (an epoch to its {len(gas)} committed runs): {link:,} gas")
    table = Table(title=f"verify, off-chain: a run of {verify['contributions']:,} contributions "
                        f"({verify['levels']}-hash proofs), load {os.getloadavg()[0]:.1f}")
    for column in ("both trees rebuilt s", "all proofs s", "per contribution µs (trees + proofs)",
                   "proofs only µs", "record read (eth_call) ms"):
        table.add_column(column, justify="right")
    table.add_row(f"{verify['trees_s']:.3f}", f"{verify['proofs_s']:.3f}", f"{verify['per_contribution_us']:.1f}",
                  f"{verify['proofs_per_contribution_us']:.1f}", f"{verify['record_read_ms']:.2f}")
    console.print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {"command": sys.orig_argv, "gas": gas, "link_epoch": link, "verify": verify}
    (OUT / "commitments.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
