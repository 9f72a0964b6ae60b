"""Governance bench: what governed parameters cost, on a real anvil.

Run from the repository root: ``.venv/bin/python -m bench.governance [--reads 50]`` (as a module: it imports
the tests' chain helpers).
It starts its own anvil, deploys payable's contracts and measures:
- the deployment's total gas (every transaction, the treasury bootstrap included);
- the emitter's ``fund`` step, a ``transferFrom`` out of the treasury's governed allowance, on a distributor with
  and without a balance yet, next to the plain ``transfer`` from a key it replaced;
- executing a one-call proposal (``setEpochPool``) through the Governor and the timelock;
- the wall time of reading the governed parameters at a block (``params.governed_params``: two RPC calls).
Prints a rich table, writes ``bench/out/governance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import contracts
from contracts.deploy import deploy
from payable import services
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from pipelines.rewards.params import governed_params
from tests.chain_helpers import enact, mine

OUT = Path(__file__).parent / "out"
DEPLOYER, OPERATOR = dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value)


def figures(chain: Chain, deployment: Deployment, reads: int) -> dict:
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    parameters = chain.contract(contracts.PROTOCOL_PARAMETERS, deployment.parameters)
    head = chain.w3.eth.block_number
    out = {"deploy_gas": sum(chain.w3.eth.get_block(n)["gasUsed"] for n in range(1, head + 1))}
    fund = token.functions.transferFrom(deployment.timelock, deployment.distributor, 10**18)
    out["fund_first"] = chain.transact(OPERATOR, fund)["gasUsed"]
    out["fund_again"] = chain.transact(OPERATOR, fund)["gasUsed"]
    out["transfer_again"] = chain.transact(DEPLOYER, token.functions.transfer(deployment.distributor, 10**18))[
        "gasUsed"]
    chain.transact(DEPLOYER, token.functions.delegate(DEPLOYER.address))
    mine(chain)
    out["execute_set_epoch_pool"] = enact(chain, deployment, [(parameters, "setEpochPool", [5 * 10**18])],
                                          "bench: pool 5 OPEN", DEPLOYER)["gasUsed"]
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        governed_params(chain, deployment)
        times.append(time.perf_counter() - start)
    out["read_ms"] = {"median": statistics.median(times) * 1e3, "max": max(times) * 1e3, "n": reads}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=50, help="governed-parameter reads to time")
    args = parser.parse_args()
    console = Console()
    console.print(f"[bold]command:[/] {shlex.join(sys.orig_argv)}  (cpus: {os.cpu_count()}, "
                  f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    with services.scratch_chain() as settings:
        chain = Chain(settings.rpc_url)
        out = figures(chain, deploy(chain, DEPLOYER, OPERATOR.address), args.reads)

    table = Table(title="governed parameters on anvil (cancun)")
    table.add_column("operation")
    table.add_column("figure", justify="right")
    table.add_row("deployment, all transactions (gas)", f"{out['deploy_gas']:,}")
    table.add_row("fund: transferFrom treasury, distributor without / with a balance (gas)",
                  f"{out['fund_first']:,} / {out['fund_again']:,}")
    table.add_row("the plain transfer it replaced, distributor with a balance (gas)", f"{out['transfer_again']:,}")
    table.add_row("execute a setEpochPool proposal (gas)", f"{out['execute_set_epoch_pool']:,}")
    table.add_row(f"governed_params read, median / max of {out['read_ms']['n']} (ms)",
                  f"{out['read_ms']['median']:.1f} / {out['read_ms']['max']:.1f}")
    console.print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "governance.json").write_text(json.dumps({"command": sys.orig_argv, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
