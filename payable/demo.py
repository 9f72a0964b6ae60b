"""`payable demo`: the main job end to end on the embedded defaults, with the time of every stage.

It starts the local services, deploys the contracts, creates two datanets, submits the planted
contributions of ``demo_corpus`` from several simulated contributors, then runs the pipeline and prints
a summary table plus one JSON line with the same figures.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from web3.logs import DISCARD

import contracts
from contracts.deploy import TOKEN_UNIT, deploy
from payable import demo_corpus, services
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import Submitted, create_datanet
from payable.datanets import contribute as submit
from payable.keys import Role, dev_account
from payable.settings import Settings

console = Console(stderr=True)


@dataclass
class StageTimer:
    """Times named stages and prints each as it finishes."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        with console.status(f"[bold]{name}…"):
            yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        console.print(f"[green]✓[/] {name} [dim]{self.seconds[name]:.2f} s[/]")


def _submit_wrong_hash(chain: Chain, deployment: Deployment, store: ContentStore, item, datanet_id: int) -> Submitted:
    """Sends a contribution whose on-chain hash does not match its bytes (a planted bad case)."""
    account = dev_account(item.contributor)
    _, uri = store.put(item.content)
    wrong = bytes(32)
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    stake = registry.functions.requiredStake(datanet_id).call()
    chain.transact(account, token.functions.approve(deployment.registry, stake))
    receipt = chain.transact(account, registry.functions.contribute(datanet_id, wrong, uri, len(item.content)))
    (event,) = registry.events.ContributionSubmitted().process_receipt(receipt, errors=DISCARD)
    return Submitted(event["args"]["contributionId"], datanet_id, "0x" + wrong.hex(), uri, len(item.content),
                     "0x" + receipt["transactionHash"].hex(), receipt["blockNumber"])


def submit_planned(chain: Chain, deployment: Deployment, store: ContentStore, datanet_ids: dict[str, int],
                   tmp_dir) -> list[tuple[demo_corpus.DemoContribution, Submitted]]:
    """Funds every simulated contributor and submits the planted contributions in order."""
    treasury = dev_account(Role.DEPLOYER.value)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    planned = demo_corpus.plan()
    for index in sorted({item.contributor for item in planned}):
        chain.transact(treasury, token.functions.transfer(dev_account(index).address, 100 * TOKEN_UNIT))
    results = []
    for number, item in enumerate(planned):
        datanet_id = datanet_ids[item.datanet]
        if item.wrong_hash:
            results.append((item, _submit_wrong_hash(chain, deployment, store, item, datanet_id)))
            continue
        path = tmp_dir / f"contribution-{number}"
        path.write_bytes(item.content)
        (submitted,) = submit(chain, deployment, store, dev_account(item.contributor), datanet_id, [path])
        results.append((item, submitted))
    return results


def run_demo(settings: Settings, fresh: bool = True) -> dict:
    """Runs the demo; returns (and prints as one JSON line) its summary."""
    timer = StageTimer()
    started = time.perf_counter()
    if fresh:
        services.down(settings)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    with timer.stage("start local services"):
        services.up(settings)
    chain = Chain(settings.rpc_url)
    store = ContentStore(settings.content_dir)
    with timer.stage("deploy contracts"):
        deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address)
        deployment.save(settings.deployment_file)
    with timer.stage("create datanets"):
        owner, validator = dev_account(Role.DEPLOYER.value), dev_account(Role.VALIDATOR.value).address
        datanet_ids = {
            key: create_datanet(chain, deployment, store, owner, spec, min_stake=TOKEN_UNIT,
                                max_contribution_size=64_000, validators=[validator])
            for key, spec in (("science", demo_corpus.SCIENCE), ("recipes", demo_corpus.RECIPES))
        }
    with timer.stage("submit contributions"):
        tmp_dir = settings.data_dir / "demo-inputs"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        submissions = submit_planned(chain, deployment, store, datanet_ids, tmp_dir)

    table = Table(title="payable demo: contributions")
    for column in ("id", "contributor", "datanet", "bytes", "planted as", "tx"):
        table.add_column(column)
    for item, submitted in submissions:
        table.add_row(str(submitted.contribution_id), dev_account(item.contributor).address[:10],
                      item.datanet, str(submitted.size), item.expect, submitted.tx_hash[:18] + "…")
    console.print(table)
    summary = {
        "datanets": datanet_ids,
        "contributions": len(submissions),
        "contributors": len({item.contributor for item, _ in submissions}),
        "stage_seconds": timer.seconds,
        "total_seconds": round(time.perf_counter() - started, 2),
        "data_dir": str(settings.data_dir),
    }
    console.print("Local services keep running for inspection: [bold]payable status[/], "
                  f"stop with [bold]payable down[/]. Data: {settings.data_dir}")
    print(json.dumps(summary), flush=True)
    return summary
