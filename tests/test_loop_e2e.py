"""The whole loop through Dagster's own jobs, in-process, against the real services: `payable demo`.

One module-scoped run of the demo (real anvil, real broker, real Beam/Lance/LoRA/DuckDB), then:
every planted case ends as planted, every asset and check is materialized and passed, a re-run with no
new events changes nothing, the audit reconciles with the chain, and the UI shows it all in a real browser.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

import contracts
from orchestration.definitions import defs
from orchestration.instance import get_instance
from orchestration.loop import Loop
from orchestration.ui_check import LOOP_ASSETS, check_ui
from payable import demo_corpus, services
from payable.chain import Chain, Deployment
from payable.demo import read_outcome, run_demo
from pipelines.attribution.sizing import MAX_BATCH
from pipelines.audit.reconcile import reconcile
from pipelines.rewards import outbox
from pipelines.validate import materialize, reasons
from tests.conftest import make_settings
from tests.test_cli import run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("demo") / "data")
    try:
        summary = run_demo(settings, fresh=True)
        yield settings, summary
    finally:
        services.down(settings)


def test_every_planted_contribution_ends_as_planted(demo):
    settings, summary = demo
    outcome = {row["contribution_id"]: row for row in read_outcome(settings.audit_db)["contributions"]}
    planned = demo_corpus.plan()
    assert len(outcome) == len(planned) + len(summary["canaries"]) == summary["contributions"]
    assert all(outcome[c]["status"] == "accepted" and outcome[c]["paid"] == 0 for c in summary["canaries"])
    (science,) = [q for q in summary["quality"] if q["datanet_id"] == summary["datanets"]["science"]]
    assert -1 <= science["lds"] <= 1 and science["canary_auc"] > 0.5, "the demo's run is judged by its canaries"
    for contribution_id, item in enumerate(planned, start=1):
        row = outcome[contribution_id]
        decided = row["status"] if row["status"] == "accepted" else row["reason"]
        assert decided == item.expect, f"#{contribution_id} ({item.planted})"
    corrupted = [i for i, item in enumerate(planned, start=1) if item.planted == "corrupted text"]
    # data scored harmful earns nothing; whether the tiny model scores each corrupted note below zero is noise
    # (CI saw one scored above zero; bench/penalties.py: planted-harm recall on it is low), so the rule is
    # asserted, not the recall
    assert all(outcome[i]["paid"] == 0 for i in outcome if (outcome[i]["score"] or 0) < 0), "harmful data earns nothing"
    assert sum(summary["rejected_by_reason"].values()) + summary["accepted"] == summary["contributions"]
    redundant = {i: 1 for i, item in enumerate(planned, start=1) if item.expect in reasons.PENALIZED}
    con = duckdb.connect(str(settings.audit_db), read_only=True)
    slashed = dict(con.execute("SELECT contribution_id, requested_reason_code FROM slashes "
                               "WHERE event_id IS NOT NULL AND NOT retracted").fetchall())
    harm = con.execute("SELECT contribution_id, score_high, refit_delta, refit_spread FROM slash_requests "
                       "WHERE reason_code = 2").fetchall()
    con.close()
    assert {c: r for c, r in slashed.items() if r == 1} == redundant, "redundant stakes slashed on-chain"
    assert {c for c, r in slashed.items() if r == 2} <= set(corrupted), "no honest stake slashed as harmful"
    # a harm slash needs the refit to beat the seed noise: on the demo's dozen notes it may not (stake kept)
    assert all(high < 0 and delta > spread for _, high, delta, spread in harm), "harm slashes carry evidence"
    assert summary["payout_txs"], "small epochs are pushed on-chain"


def test_the_permissioned_datanet_is_trained_under_its_grant(demo):
    settings, summary = demo
    con = duckdb.connect(str(settings.audit_db), read_only=True)
    visibility = dict(con.execute("SELECT datanet_id, permissioned FROM datanets").fetchall())
    trained = con.execute("SELECT datanet_id, access_grant FROM training_runs ORDER BY datanet_id").fetchall()
    grants = con.execute("SELECT g.datanet_id, g.event_id, g.requested_event_id IS NOT NULL, g.live, t.adapter_id "
                         "FROM access_grants g JOIN grant_trainings t ON t.grant_event_id = g.event_id").fetchall()
    con.close()
    recipes = summary["datanets"]["recipes"]
    assert visibility == {summary["datanets"]["science"]: False, recipes: True}
    ((datanet, grant, asked, live, adapter),) = grants
    assert (datanet, asked, live) == (recipes, True, True) and adapter is not None
    assert dict(trained) == {summary["datanets"]["science"]: None, recipes: grant}


def test_every_asset_materialized_and_every_check_passed(demo):
    settings, _ = demo
    instance = get_instance(settings)
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(LOOP_ASSETS)
    for key in graph.get_all_asset_keys():
        assert instance.get_latest_materialization_event(key) is not None, key
    for check in graph.asset_check_keys:
        (latest,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=1)
        assert latest.evaluation is not None and latest.evaluation.passed, f"{check.name} on {check.asset_key}"


def test_attribution_states_its_gradient_batch(demo):
    settings, _ = demo
    event = get_instance(settings).get_latest_materialization_event(dg.AssetKey("influence_scores"))
    metadata = event.asset_materialization.metadata
    assert metadata["gradient_batch_size"].value == MAX_BATCH, "the tiny model's batches are the cap"
    assert "MB an example" in metadata["gradient_batch"].value and "2,048 MB budget" in metadata["gradient_batch"].value


def test_a_demo_contribution_verifies_from_its_chain_event_to_its_payout(demo):
    settings, _ = demo
    accepted = next(i for i, item in enumerate(demo_corpus.plan(), start=1) if item.expect == "accepted")
    out = run(settings, "verify", "--contribution", str(accepted), "--epoch", "1").stdout
    links = [line.split()[1] for line in out.splitlines()]
    assert links[0] == "chain-event" and links[-4:] == ["epoch", "epoch-runs", "epoch-params", "payout"]
    assert {"model-commitment", "dataset", "influence-commitment", "score"} <= set(links)


def test_rerun_without_new_events_changes_nothing(demo):
    settings, _ = demo
    chain = Chain(settings.rpc_url)
    lance_versions = lambda: {d: materialize.open_dataset(materialize.dataset_uri(settings.lance_dir, d)).version  # noqa: E731
                              for d in (1, 2)}
    before = (chain.w3.eth.block_number, lance_versions(), outbox.closed_epochs(settings.kafka_bootstrap).keys(),
              sorted(p.name for p in settings.adapters_dir.glob("dn-*/*")))
    Loop(settings).run_all()
    after = (chain.w3.eth.block_number, lance_versions(), outbox.closed_epochs(settings.kafka_bootstrap).keys(),
             sorted(p.name for p in settings.adapters_dir.glob("dn-*/*")))
    assert after == before, "no new block (so no transaction), dataset version, epoch or adapter"


def test_audit_reconciles_with_the_chain(demo):
    settings, summary = demo
    deployment = Deployment.load(settings.deployment_file)
    assert reconcile(settings, deployment) == []
    distributor = Chain(settings.rpc_url).contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    epoch = summary["epoch"]["epoch_id"]
    assert "0x" + distributor.functions.epochRoot(epoch).call().hex() == summary["epoch"]["merkle_root"]


def test_definitions_validate():
    result = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-m",
                             "orchestration.definitions"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_ui_shows_every_asset_materialized_and_every_check_passed(demo, tmp_path):
    settings, _ = demo
    report = check_ui(settings, tmp_path / "asset-graph.png")
    assert report.unmaterialized == [] and report.failed_checks == []
    assert report.checks_passed == len(defs.resolve_asset_graph().asset_check_keys)
    assert report.screenshot.stat().st_size > 10_000, "a rendered page, not a blank one"


def test_train_and_attribute_commands_on_the_demo_data(demo):
    settings, _ = demo
    trained = json.loads(run(settings, "train", "--datanet", "1").stdout)
    assert trained == {"datanet_id": 1, "trained": False, "reason": "dataset unchanged"}
    rows = [json.loads(line) for line in run(settings, "attribute", "--datanet", "1").stdout.splitlines()]
    accepted = {r["contribution_id"] for r in read_outcome(settings.audit_db)["contributions"]
                if r["datanet_id"] == 1 and r["status"] == "accepted"}
    assert {r["contribution_id"] for r in rows} == accepted and len(rows) == len(accepted)
    assert sorted(r["rank"] for r in rows) == list(range(1, len(rows) + 1))
    assert "method must be one of" in run(settings, "attribute", "--datanet", "1", "--method", "nope", ok=False).stderr


def test_the_demo_ends_with_its_rag_chats_paid_once_by_a_usage_epoch(demo):
    settings, summary = demo
    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    usage_epochs = [e for e, record in closed.items() if record["usage_events"]]
    assert len(usage_epochs) == 1 and closed[usage_epochs[0]]["usage_events"] == len(summary["usage"]) == 3
    assert all(answer["earned"] for answer in summary["usage"]), "every chat paid the data behind it"
    assert all(any(key.endswith(":trainer") for key in answer["earned"]) for answer in summary["usage"])
    chain = Chain(settings.rpc_url)
    deployment = Deployment.load(settings.deployment_file)
    attribution = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
    assert "0x" + attribution.functions.usageRoot(usage_epochs[0]).call().hex() == closed[usage_epochs[0]]["usage_root"]
