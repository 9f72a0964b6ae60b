"""Attribution quality per run: LDS from real retraining, canary AUC from a commit-reveal, both committed.

The pure math (LDS, AUC, the canary commitment) is checked directly; then, on a real anvil, broker, Lance
dataset and trained adapter, the operator plants canaries through the chain (``payable canaries plant``'s
function), ``payable attribute`` measures the LDS and records the commitment, a wrong reveal is refused, the
right one gives the AUC, ``payable commit`` publishes both and the registry holds them, and the epoch pays no
canary (and refuses to close while they are unrevealed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import dagster as dg
import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import contracts
from assets.attribution import influence_scores
from orchestration.resources import DataDirResource, KafkaResource
from payable import services
from payable.keys import Role, dev_account
from pipelines.attribution import canaries
from pipelines.attribution.quality import canary_auc, lds, random_subsets
from pipelines.attribution.table import influence_uri, read_influence, write_influence
from pipelines.commitments import log as commitments_log
from pipelines.commitments.records import InfluenceCommitment, commitment_id, fixed_point, hexed
from pipelines.commitments.verify import verify_contribution
from pipelines.ingest.ingester import ingest_until_head
from pipelines.rewards.cycle import close_due_epoch
from pipelines.training import train_latest
from schemas.datasets import CONTRIBUTION_ROW
from schemas.influence import QUALITY_COLUMNS
from tests.attribution_fixtures import FAST, write_evals, write_version
from tests.conftest import make_settings
from tests.test_commitments import EVALS, _accept, dataset_row, science_datanet
from tests.test_rewards_emitter import run_cli

TRAINER = dev_account(Role.TRAINER.value)
CANARIES = 3
SUBSETS = 8


def test_lds_is_one_when_scores_predict_the_retrained_losses_and_minus_one_when_reversed():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(12, 4))
    subsets = random_subsets(12, 8)
    assert subsets.shape == (8, 12) and (subsets.sum(1) == 6).all()
    assert (random_subsets(12, 8) == subsets).all(), "seeded: the same subsets every time"
    losses = 5.0 - subsets @ scores  # a subset's loss falls by exactly its members' scores
    assert lds(scores, subsets, losses) == pytest.approx(1.0)
    assert lds(scores, subsets, -losses) == pytest.approx(-1.0)
    scores[0, 0] = np.nan  # a held-out contribution's own query predicts nothing there
    assert -1.0 <= lds(scores, subsets, losses) <= 1.0
    assert np.isnan(lds(scores, subsets, np.ones_like(losses))), "constant losses: no correlation, not a number"


def test_canary_auc_ranks_by_harm_and_is_unmeasured_without_both_classes():
    scores = np.array([0.5, 0.2, -0.1, -3.0, -2.0])
    assert canary_auc(scores, np.array([0, 0, 0, 1, 1], bool)) == 1.0
    assert canary_auc(scores, np.array([1, 1, 0, 0, 0], bool)) == 0.0
    assert canary_auc(np.zeros(4), np.array([1, 0, 0, 0], bool)) == 0.5
    assert np.isnan(canary_auc(scores, np.zeros(5, bool)))


def test_a_canary_commitment_binds_salt_and_ids():
    salt = "0x" + "11" * 32
    committed = canaries.commitment_of(salt, [7, 3, 5])
    assert committed == canaries.commitment_of(salt, [3, 5, 7]), "order does not matter"
    assert committed != canaries.commitment_of(salt, [3, 5, 8])
    assert committed != canaries.commitment_of("0x" + "12" * 32, [3, 5, 7])
    with pytest.raises(canaries.CanaryError, match="32 bytes"):
        canaries.commitment_of("0x1234", [1])


def test_an_influence_table_from_before_the_quality_columns_is_read_and_upgraded(tmp_path):
    old = _old_rows(datanet_id=1, adapter_id="a-old")
    lance.write_dataset(old, influence_uri(tmp_path))
    read = read_influence(tmp_path)
    assert read.num_rows == 2 and all(read[c].null_count == 2 for c in QUALITY_COLUMNS)
    new = read_influence(tmp_path).set_column(read.schema.get_field_index("adapter_id"), "adapter_id",
                                              pa.array(["a-new"] * 2))
    write_influence(tmp_path, new)
    both = lance.dataset(influence_uri(tmp_path)).to_table()
    assert set(QUALITY_COLUMNS) <= set(both.column_names) and sorted(set(both["adapter_id"].to_pylist())) == [
        "a-new", "a-old"]


def _old_rows(datanet_id: int, adapter_id: str) -> pa.Table:
    from pipelines.attribution.table import INFLUENCE

    row = {"contribution_id": 1, "contributor": "0xa", "datanet_id": datanet_id, "dataset_version": 1,
           "adapter_id": adapter_id, "method": "tracin", "content_hash": "0x01", "score": 0.1, "rank": 1, "copies": 1,
           "trained": True, "harmful": False, "helped_queries": [], "hurt_queries": [], "score_low": 0.0,
           "score_high": 0.2, "checkpoint_scores": [0.1], "robust_z": 0.0, "refit_delta": None, "refit_spread": None}
    old_schema = pa.schema([f for f in INFLUENCE if f.name not in QUALITY_COLUMNS])
    return pa.Table.from_pylist([row, {**row, "contribution_id": 2, "rank": 2}], schema=old_schema)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Services, contracts, a datanet with nine real contributions plus three canaries planted through the
    chain by the attribution operator (ids committed on the log), and an adapter trained on all twelve."""
    tmp = tmp_path_factory.mktemp("quality")
    settings = make_settings(tmp / "data")
    services.up(settings)
    try:
        chain, deployment, datanet, rows = science_datanet(settings, tmp, also_funded=(TRAINER,))
        planted = canaries.plant(settings, datanet, CANARIES, TRAINER, seed=11)
        chain.mine(settings.confirmations + 1)
        ingest_until_head(settings, deployment)  # the reveal checks who planted each canary on the chain facts
        for cid, text in zip(planted.contribution_ids, canaries.canary_texts(CANARIES, 11), strict=True):
            rows.append(dataset_row(registry_submission(chain, deployment, cid), datanet, TRAINER.address, text))
        write_version(settings, datanet, pa.Table.from_pylist(rows, schema=CONTRIBUTION_ROW))
        write_evals(settings, datanet, EVALS)
        _accept(settings, chain.chain_id, rows)
        train_latest(settings, datanet, FAST, show_progress=False)
        yield settings, chain, deployment, datanet, rows, planted
    finally:
        services.down(settings)


@dataclass(frozen=True)
class _Submitted:
    contribution_id: int
    content_hash: str
    size: int
    block_number: int


def registry_submission(chain, deployment, contribution_id: int) -> _Submitted:
    """A canary's ContributionSubmitted event, as the ingester would read it."""
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    (event,) = registry.events.ContributionSubmitted().get_logs(argument_filters={"contributionId": contribution_id},
                                                                from_block=deployment.deploy_block)
    return _Submitted(contribution_id, hexed(event["args"]["contentHash"]), event["args"]["size"],
                      event["blockNumber"])


@pytest.fixture(scope="module")
def scored(world):
    """``payable attribute`` on the datanet while its canaries are committed and unrevealed."""
    settings, _, _, datanet, _, _ = world
    result = run_cli(settings, "attribute", "--datanet", str(datanet), "--lds-subsets", str(SUBSETS))
    assert result.returncode == 0, result.stderr
    return result


def test_the_run_measures_its_lds_by_retraining_and_records_the_canary_commitment(world, scored):
    settings, _, deployment, datanet, rows, planted = world
    assert "quality: LDS" in scored.stderr and f"over {SUBSETS} retrained subsets" in scored.stderr
    assert "pending: canaries" in scored.stderr, "the AUC waits for the reveal, never a made-up number"
    table = read_influence(settings.lance_dir, f"datanet_id = {datanet}")
    assert table.num_rows == len(rows)
    (value,) = set(table["lds"].to_pylist())
    assert value is not None and np.isfinite(value) and -1.0 <= value <= 1.0
    assert set(table["lds_subsets"].to_pylist()) == {SUBSETS}
    assert set(table["canary_commitment"].to_pylist()) == {planted.commitment}
    assert table["canary_auc"].null_count == table.num_rows and table["canary"].null_count == table.num_rows
    with pytest.raises(canaries.CanaryError, match="unrevealed canaries"):
        close_due_epoch(settings, deployment)  # while the split cannot tell the canaries, it could pay them
    refused = run_cli(settings, "reward")
    assert refused.returncode == 1 and "unrevealed canaries" in refused.stderr, refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr
    waiting = run_cli(settings, "commit")
    assert waiting.returncode == 0, waiting.stderr
    assert '"state": "waiting"' in waiting.stdout, "the run is not committed with its AUC unmeasured"


@pytest.fixture(scope="module")
def revealed(world, scored):
    settings, _, _, datanet, _, planted = world
    wrong = run_cli(settings, "canaries", "reveal", "--datanet", str(datanet), "--salt", "0x" + "ab" * 32,
                    "--ids", ",".join(str(c) for c in planted.contribution_ids))
    assert wrong.returncode == 1 and "does not match" in wrong.stderr, wrong.stderr
    assert wrong.stderr.strip().count("\n") == 0 and "Traceback" not in wrong.stderr
    good = run_cli(settings, "canaries", "reveal", "--datanet", str(datanet))
    assert good.returncode == 0, good.stderr
    return [json.loads(line) for line in good.stdout.splitlines()]


def test_a_matching_reveal_gives_the_run_its_canary_auc(world, revealed):
    settings, _, _, datanet, _, planted = world
    (run,) = revealed
    assert run["commitment"] == planted.commitment and run["canaries"] == list(planted.contribution_ids)
    assert run["canary_auc"] > 0.5, "garbage canaries rank among the most harmful"
    table = read_influence(settings.lance_dir, f"datanet_id = {datanet}")
    assert set(table["canary_auc"].to_pylist()) == {run["canary_auc"]}
    flagged = {c for c, f in zip(table["contribution_id"].to_pylist(), table["canary"].to_pylist(), strict=True) if f}
    assert flagged == set(planted.contribution_ids)
    state = canaries.for_datanet(settings.kafka_bootstrap, datanet)
    assert state.revealed == {planted.commitment: planted.contribution_ids}, "only the matching reveal counts"


def test_lds_and_auc_are_committed_on_chain_and_a_canary_is_never_paid(world, revealed):
    settings, chain, deployment, datanet, rows, planted = world
    committed = run_cli(settings, "commit")
    assert committed.returncode == 0, committed.stderr
    table = read_influence(settings.lance_dir, f"datanet_id = {datanet}")
    run = f"{datanet}:1:{table['adapter_id'][0].as_py()}:tracin"
    record = commitments_log.recorded(commitments_log.read_log(settings.kafka_bootstrap)[hexed(commitment_id(run))])
    commitment = InfluenceCommitment.from_record(record)
    assert commitment.lds == fixed_point(table["lds"][0].as_py()) != 0
    assert commitment.auc == fixed_point(revealed[0]["canary_auc"]) != 0
    registry = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
    assert "0x" + registry.functions.influenceRecord(commitment_id(run)).call().hex() == commitment.record_hash()
    assert verify_contribution(settings, deployment, rows[0]["contribution_id"]).ok

    _, closed = close_due_epoch(settings, deployment)  # by the governed parameters, as every caller closes
    assert closed is not None
    allocations = pq.read_table(closed.directory / "allocations.parquet")
    outcomes = dict(zip(allocations["contribution_id"].to_pylist(), allocations["outcome"].to_pylist(), strict=True))
    assert {outcomes[c] for c in planted.contribution_ids} == {"canary"}
    paid = pq.read_table(closed.directory / "payouts.parquet")["account"].to_pylist()
    assert paid and TRAINER.address.lower() not in paid


def test_the_dagster_asset_reports_the_runs_quality(world, revealed):
    settings, _, _, datanet, _, _ = world
    before = read_influence(settings.lance_dir, f"datanet_id = {datanet}")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datanet", [f"dn-{datanet}"])
    result = dg.materialize([influence_scores], partition_key=f"dn-{datanet}", instance=instance,
                            run_config={"ops": {"influence_scores": {"config": {"lds_subsets": SUBSETS}}}},
                            resources={"data_dir": DataDirResource(path=str(settings.data_dir)),
                                       "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap)})
    metadata = result.asset_materializations_for_node("influence_scores")[0].metadata
    assert metadata["lds"].value == pytest.approx(before["lds"][0].as_py()), "deterministic refits"
    assert metadata["lds_subsets"].value == SUBSETS
    auc = before["canary_auc"][0].as_py()
    assert metadata["canary_auc"].value == f"{auc:.3f} on {CANARIES} revealed canaries", "a replay after the reveal"
