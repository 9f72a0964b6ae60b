"""Commitments end to end on a real anvil, broker, Lance dataset and trained adapter.

A datanet of real contributions is trained on (tiny GPT-2 LoRA) and scored (TracIn); ``payable commit`` is
killed at each point of its outbox and rerun (each commitment lands once); an epoch is closed and paid; then
``payable verify`` walks a contribution's links, and fails naming the link when a score in the influence
table, a row of the dataset version or an amount of the epoch's allocation is tampered with.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import contracts
from payable import kafka_log, services
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec, contribute, create_datanet
from payable.keys import Role, dev_account
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.table import influence_uri, write_influence
from pipelines.commitments import sources
from pipelines.commitments.publisher import CommitmentConflict, commit_all, publish
from pipelines.commitments.verify import verify_contribution
from pipelines.rewards import epochs, outbox
from pipelines.rewards.cycle import close_due_epoch
from pipelines.rewards.emitter import emit_epoch
from pipelines.rewards.params import GovernedParams
from pipelines.training import train_latest
from pipelines.validate import materialize
from schemas import rewards as reward_schema
from schemas import topics
from schemas.datasets import CONTRIBUTION_ROW
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.attribution_fixtures import FAST, write_evals, write_version
from tests.conftest import make_settings
from tests.test_rewards_emitter import run_cli

DEPLOYER, VALIDATOR, TRAINER = (dev_account(r.value) for r in (Role.DEPLOYER, Role.VALIDATOR, Role.TRAINER))
CONTRIBUTORS = [dev_account(i) for i in (3, 4, 5)]
TEXTS = [f"{topic} number {i}: the {topic} of the sample is described here in plain words."
         for i, topic in enumerate(["water boils", "iron rusts", "plants grow", "stars shine", "ice melts",
                                    "salt dissolves", "wind blows", "rain falls", "light bends"])]
EVALS = ["water boils when heated", "plants grow in light", "ice melts in the sun"]


def science_datanet(settings, tmp: Path, also_funded: tuple = ()) -> tuple[Chain, Deployment, int, list[dict]]:
    """Contracts and a datanet with nine real contributions (three contributors, staked through the chain);
    ``also_funded`` accounts get stake money too. Returns the dataset rows of the contributions."""
    chain = Chain(settings.rpc_url)
    from contracts.deploy import deploy

    deployment = deploy(chain, DEPLOYER, dev_account(Role.OPERATOR.value).address, attributor=TRAINER.address)
    deployment.save(settings.deployment_file)
    store = ContentStore(settings.content_dir)
    datanet = create_datanet(chain, deployment, store, DEPLOYER, DatanetSpec("science"), min_stake=10**18,
                             max_contribution_size=10_000, validators=[VALIDATOR.address])
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    for who in (*CONTRIBUTORS, *also_funded):
        chain.transact(DEPLOYER, token.functions.transfer(who.address, 3 * 10**18), label="stake money")
    rows = []
    for k, who in enumerate(CONTRIBUTORS):
        files = []
        for i in range(3 * k, 3 * k + 3):
            files.append(tmp / f"c{i}.txt")
            files[-1].write_text(TEXTS[i])
        for s, path in zip(contribute(chain, deployment, store, who, datanet, files), files, strict=True):
            rows.append(dataset_row(s, datanet, who.address, path.read_text()))
    return chain, deployment, datanet, rows


def dataset_row(s, datanet: int, address: str, text: str) -> dict:
    """The dataset version's row of a submitted contribution (what validate would materialize)."""
    return {"contribution_id": s.contribution_id, "datanet_id": datanet, "contributor": address.lower(),
            "content_hash": s.content_hash, "text": text, "size": s.size, "block_number": s.block_number,
            "fact_event_id": f"fact-{s.contribution_id}", "verdict_id": f"v-{s.contribution_id}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Services, contracts, one datanet with nine real contributions, an adapter trained and scored on them."""
    tmp = tmp_path_factory.mktemp("commitments")
    settings = make_settings(tmp / "data")
    services.up(settings)
    try:
        chain, deployment, datanet, rows = science_datanet(settings, tmp)
        write_version(settings, datanet, pa.Table.from_pylist(rows, schema=CONTRIBUTION_ROW))
        write_evals(settings, datanet, EVALS)
        _accept(settings, chain.chain_id, rows)
        record = train_latest(settings, datanet, FAST, show_progress=False).record
        attribute(settings, datanet, record.adapter_id, ScoreArguments(method="tracin", projection_dim=64))
        yield settings, chain, deployment, datanet, rows
    finally:
        services.down(settings)


def _accept(settings, chain_id: int, rows: list[dict]) -> None:
    """The validate stage's verdicts on the log: every contribution accepted (the split reads them)."""
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    kafka_log.ensure_topics(settings.kafka_bootstrap)
    verdicts = [{"verdict_id": r["verdict_id"], "fact_event_id": r["fact_event_id"], "fact_block_hash": "0x00",
                 "chain_id": chain_id, "block_number": r["block_number"], "contribution_id": r["contribution_id"],
                 "datanet_id": r["datanet_id"], "contributor": r["contributor"], "content_hash": r["content_hash"],
                 "status": "accepted", "reason": None, "duplicate_of": None, "similarity": None, "penalize": False,
                 "detail": "", "source_partition": 0, "source_offset": i, "rules_version": "test"}
                for i, r in enumerate(rows)]
    by_datanet = lambda r: topics.datanet_key(r["datanet_id"])  # noqa: E731
    for future in kafka_log.produce(producer, CONTRIBUTION_VERDICT, verdicts, key=by_datanet):
        future.get(timeout=30)
    producer.close()


def _events(chain: Chain, deployment: Deployment, name: str) -> list:
    attribution = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
    return getattr(attribution.events, name)().get_logs(from_block=deployment.deploy_block)


@pytest.fixture(scope="module")
def committed(world):
    """``payable commit`` killed after the model's intent, then after the run's send, then run to the end."""
    settings, chain, deployment, _, _ = world
    first = run_cli(settings, "commit", crash_at="model:after_intent")
    assert first.returncode == -9, first.stderr
    assert not _events(chain, deployment, "ModelCommitted"), "killed before sending"
    second = run_cli(settings, "commit", crash_at="influence:after_send")
    assert second.returncode == -9, second.stderr
    third = run_cli(settings, "commit")
    assert third.returncode == 0, third.stderr
    return third.stdout


def test_killed_commit_reruns_publish_each_commitment_once(world, committed):
    settings, chain, deployment, _, _ = world
    assert len(_events(chain, deployment, "ModelCommitted")) == 1
    assert len(_events(chain, deployment, "InfluenceCommitted")) == 1
    (event,) = _events(chain, deployment, "ModelCommitted")
    assert event["args"]["datasetVersion"] == 1
    again = commit_all(settings, deployment)  # a rerun finds everything on-chain and sends nothing
    assert again.ok and all(s.detail == "record on-chain" and len(s.tx_hashes) == 1 for s in again.steps)


def test_verify_walks_from_chain_event_to_payout_and_names_each_tampered_link(world, committed):
    settings, _, deployment, _, rows = world
    _, closed = close_due_epoch(settings, deployment)  # by the governed parameters, as every caller closes
    assert closed is not None and closed.accounts and emit_epoch(settings, deployment, 1).ok
    cid = rows[4]["contribution_id"]

    ok = run_cli(settings, "verify", "--contribution", str(cid), "--epoch", "1")
    assert ok.returncode == 0, ok.stderr
    links = [line.split()[1] for line in ok.stdout.splitlines()]
    assert links == ["chain-event", "model-commitment", "dataset", "influence-commitment", "score", "epoch",
                     "epoch-runs", "epoch-params", "payout"]
    assert all("(tx 0x" in line for line in ok.stdout.splitlines()
               if line.split()[1] not in ("dataset", "score", "epoch-params"))

    with _tampered_score(settings, cid):
        bad = run_cli(settings, "verify", "--contribution", str(cid))
        assert bad.returncode == 1 and "FAIL  score" in bad.stdout and "score link" in bad.stderr
    with _tampered_dataset_row(settings, rows, other_than=cid):
        assert verify_contribution(settings, deployment, cid).broken.link == "dataset"
    with _tampered_allocation(settings, rows[4]["contributor"]):
        assert verify_contribution(settings, deployment, cid, 1).broken.link == "payout"
    assert verify_contribution(settings, deployment, cid, 1).ok, "restored projections verify again"

    # Last, as the log cannot be restored: a marker claiming a pool the governed parameters never had.
    marker = outbox.closed_epochs(settings.kafka_bootstrap)[1]
    forged = replace(GovernedParams.from_json(marker["params"]), epoch_pool=1)
    writer = outbox.OutboxWriter(settings.kafka_bootstrap)
    writer.append(reward_schema.REWARD_EPOCH_CLOSED, [{**marker, "params": forged.to_json()}])
    writer.close()
    assert verify_contribution(settings, deployment, cid, 1).broken.link == "epoch-params"


def test_a_run_whose_scores_changed_cannot_be_recommitted(world, committed):
    settings, _, deployment, _, rows = world
    with _tampered_score(settings, rows[0]["contribution_id"]):
        table = sources.influence_table(settings)
        (run,) = sources.runs_of(table, set(table["adapter_id"].to_pylist()))
        changed = sources.influence_commitment(sources.run_rows(table, run), run)
        with pytest.raises(CommitmentConflict, match="was recorded as"):
            publish(settings, deployment, [changed])
        assert commit_all(settings, deployment).ok, "what was committed stays committed; nothing is re-sent"


class _Restoring:
    """Tampers with a projection on entry and puts the original back on exit."""

    def __init__(self, tamper, restore):
        self.tamper, self.restore = tamper, restore

    def __enter__(self):
        self.tamper()

    def __exit__(self, *exc):
        self.restore()


def _tampered_score(settings, contribution_id: int) -> _Restoring:
    original = lance.dataset(influence_uri(settings.lance_dir)).to_table()
    scores = pc.if_else(pc.equal(original["contribution_id"], contribution_id),
                        pc.add(original["score"], 1e-9), original["score"])
    tampered = original.set_column(original.schema.get_field_index("score"), "score", scores)
    return _Restoring(lambda: write_influence(settings.lance_dir, tampered),
                      lambda: write_influence(settings.lance_dir, original))


def _tampered_dataset_row(settings, rows: list[dict], other_than: int) -> _Restoring:
    uri = materialize.dataset_uri(settings.lance_dir, rows[0]["datanet_id"])
    victim = next(r for r in rows if r["contribution_id"] != other_than)
    changed = [dict(r, content_hash="0x" + "ab" * 32) if r is victim else r for r in rows]

    def rewrite(table_rows):  # the same version number, different rows: as if the files were edited
        shutil.rmtree(uri)
        assert write_version(settings, rows[0]["datanet_id"],
                             pa.Table.from_pylist(table_rows, schema=CONTRIBUTION_ROW)) == 1

    return _Restoring(lambda: rewrite(changed), lambda: rewrite(rows))


def _tampered_allocation(settings, account: str) -> _Restoring:
    path = Path(epochs.epoch_dir(settings, 1)) / "payouts.parquet"
    original = pq.read_table(path)
    amounts = [str(int(a) + 1) if who == account else a for who, a in
               zip(original["account"].to_pylist(), original["amount"].to_pylist(), strict=True)]
    tampered = original.set_column(original.schema.get_field_index("amount"), "amount", pa.array(amounts))
    return _Restoring(lambda: pq.write_table(tampered, path), lambda: pq.write_table(original, path))
