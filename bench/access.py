"""Access-control bench: gas of creating datanets (public, permissioned) and of request, grant, revoke.

Run from the repository root: ``.venv/bin/python bench/access.py``. It starts its own anvil (fresh state in
a temp dir), deploys payable's contracts, and sends each transaction through ``payable.access`` (the same
calls ``payable datanet request-access/grant/revoke`` make). The first datanet also writes ``datanetCount``
from zero; a grant writes a fresh storage slot; a revoke clears it (partly refunded); a grant after a revoke
writes the slot again from zero. Prints a rich table and writes ``bench/out/access.json``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import contracts
from contracts.deploy import deploy
from payable import access, services
from payable.chain import Chain
from payable.keys import Role, dev_account
from payable.settings import Settings

OUT = Path(__file__).parent / "out"
OWNER, TRAINER = dev_account(Role.DEPLOYER.value), dev_account(Role.TRAINER.value)


def gas_figures(settings: Settings) -> dict[str, int]:
    chain = Chain(settings.rpc_url)
    deployment = deploy(chain, OWNER, dev_account(Role.OPERATOR.value).address)
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)

    def create(permissioned: bool) -> int:
        call = registry.functions.createDatanet("cas://bench", 10**18, 10_000, [], permissioned)
        return chain.transact(OWNER, call, label="createDatanet")["gasUsed"]

    figures = {"create_first_datanet": create(False), "create_public": create(False),
               "create_permissioned": create(True)}
    datanet = registry.functions.datanetCount().call()
    figures["request"] = access.request_access(chain, deployment, TRAINER, datanet).gas_used
    figures["grant"] = access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address).gas_used
    figures["revoke"] = access.revoke_access(chain, deployment, OWNER, datanet, TRAINER.address).gas_used
    figures["grant_again"] = access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address).gas_used
    return figures


def main() -> None:
    console = Console()
    console.print(f"[bold]command:[/] {shlex.join(sys.orig_argv)}")
    with services.scratch_chain() as settings:
        gas = gas_figures(settings)
    table = Table(title="DatanetRegistry access control, gas on anvil (cancun)")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    for name, used in gas.items():
        table.add_row(name.replace("_", " "), f"{used:,}")
    console.print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "access.json").write_text(json.dumps({"command": sys.orig_argv, "gas": gas}, indent=1) + "\n")


if __name__ == "__main__":
    main()
