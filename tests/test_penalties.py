"""Penalties need evidence (invariant 7): no honest stake slashed on noise, confirmed harm slashed with its
evidence on the log and in the audit, and a datanet that cannot be scored fails alone with a clear reason."""

from __future__ import annotations

import random
from dataclasses import replace

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from assets.attribution import influence_scores
from orchestration.resources import DataDirResource, KafkaResource
from payable import kafka_log
from pipelines.attribution import INFLUENCE, ScoreArguments, attribute
from pipelines.attribution.arguments import HarmArguments
from pipelines.attribution.counterfactual import eval_loss
from pipelines.attribution.harm import noise_evidence, signs_agree
from pipelines.attribution.synthetic import contribution_text, labelled_datanet, make_datanet, rows
from pipelines.audit.build import build_audit_db
from pipelines.rewards import outbox
from pipelines.rewards.epochs import close_epoch
from pipelines.rewards.inputs import INFLUENCE_TABLE, harm_evidence, load_inputs
from pipelines.rewards.split import EpochInputs, EpochParams, split_rewards
from pipelines.training import train_latest
from pipelines.training.data import held_out
from schemas import rewards as schema
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version
from tests.chain_helpers import fixed_params
from tests.test_rewards_emitter import run_cli
from tests.test_rewards_inputs import verdict

TRACIN = ScoreArguments(method="tracin", projection_dim=64)


def all_accepted(table: pa.Table) -> pa.Table:
    return pa.table({"contribution_id": table["contribution_id"], "datanet_id": table["datanet_id"],
                     "contributor": table["contributor"], "status": ["accepted"] * table.num_rows,
                     "reason": pa.nulls(table.num_rows, pa.string()),
                     "duplicate_of": pa.nulls(table.num_rows, pa.int64())}, schema=schema.VERDICT)


def test_honest_contributions_scoring_below_zero_are_slashed_nowhere(tmp_path):
    """60 well-formed records, one contributor each: some score below zero on noise alone (the old rule, score <
    -0.1 median |score| on one estimate, slashed such stakes); none is flagged, none slashed."""
    settings = settings_in(tmp_path)
    dn = labelled_datanet(datanet_id=1, good=60, flipped=0, lines=1)
    write_version(settings, 1, dn.table)
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, replace(FAST, epochs=8), show_progress=False).record
    table = attribute(settings, 1, record.adapter_id, TRACIN).table
    assert (np.array(table["score"].to_pylist()) < 0).any(), "noise puts some honest scores below zero"
    assert not any(table["harmful"].to_pylist())
    inputs = EpochInputs(table.select(schema.INFLUENCE.names), all_accepted(table), frozenset(),
                         harm_evidence(table))
    split = split_rewards(inputs, EpochParams(epoch_id=1, pool=10**18))
    assert split.slash_requests == (), "no honest stake is slashed on a noisy estimate"
    assert len(split.accounts) > 0


def test_a_flagged_contribution_is_refitted_without_and_the_evidence_is_recorded(tmp_path):
    settings = settings_in(tmp_path)
    dn = make_datanet(contributors={"on_topic": 6}, per_contributor=4, num_queries=8)
    rng = random.Random(3)
    planted = rows(1, [(f"0xbad{i:037x}", contribution_text(rng, "corrupted", 12)) for i in range(2)], first_id=500)
    write_version(settings, 1, pa.concat_tables([dn.table, planted]))
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, replace(FAST, num_checkpoints=3), show_progress=False).record
    result = attribute(settings, 1, record.adapter_id, TRACIN)
    rows_ = {r["contribution_id"]: r for r in result.table.to_pylist()}
    flagged = [cid for cid, r in rows_.items() if r["harmful"]]
    assert flagged and set(flagged) <= {500, 501}, "only the planted random text is flagged"
    assert result.refit is not None and result.refit.removed == tuple(sorted(flagged))
    assert len(result.refit.full_losses) == 3, "the adapter's seed and two more measure the spread"
    fitted = eval_loss(pa.concat_tables([dn.table, planted])["text"].to_pylist(), dn.eval_texts,
                       replace(FAST, num_checkpoints=3))
    assert result.refit.full_losses[0] == fitted == record.metrics["eval_loss"], "the adapter's own fit is reused"
    for cid in flagged:
        row = rows_[cid]
        assert row["score_high"] < 0 and row["robust_z"] < -3.5
        assert (row["refit_delta"], row["refit_spread"]) == pytest.approx((result.refit.delta, result.refit.spread))
    assert all(r["refit_delta"] is None for cid, r in rows_.items() if cid not in flagged)


def test_harm_tests_need_the_interval_the_checkpoints_and_the_outlier():
    rng = np.random.default_rng(0)
    per_query = rng.normal(1.0, 0.2, size=(40, 12))
    per_query[0] -= 3.0  # clearly harmful on every query
    per_query[1, :3] -= 6.0  # harmful on average, through a quarter of the queries: the interval straddles zero
    per_checkpoint = np.stack([per_query.mean(1) * 0.7, per_query.mean(1) * 0.3], axis=1)
    per_checkpoint[2] = [-1.0, 0.9]  # a low score whose checkpoints disagree
    score = per_checkpoint.sum(1)
    evidence = noise_evidence(score, per_query, per_checkpoint, HarmArguments(), seed=0)
    assert evidence.flagged.tolist() == [True] + [False] * 39
    assert evidence.high[0] < 0 < evidence.high[1]
    assert signs_agree(np.array([[-0.04, 0.001, 0.006], [-0.04, 0.02, 0.0]]), 0.25).tolist() == [True, False]


def test_confirmed_harm_is_slashed_with_its_evidence_on_the_log_and_in_the_audit(stack):
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    who = "0x" + "a1" * 20
    producer = kafka_log.make_producer(stack.kafka_bootstrap)
    kafka_log.produce(producer, CONTRIBUTION_VERDICT, [verdict(c, who, "accepted") for c in (1, 6, 7)],
                      key=lambda r: str(r["datanet_id"]).encode())
    producer.flush()
    producer.close()
    import lance  # here, not at collection: lance's threads make later forks unsafe

    row = {"contributor": who, "datanet_id": 1, "dataset_version": 1, "adapter_id": "a", "method": "tracin",
           "rank": 0, "harmful": True, "score": -0.5, "score_low": -0.8, "score_high": -0.2, "robust_z": -6.0,
           "content_hash": "0x" + "cd" * 32, "copies": 1, "trained": True, "helped_queries": [], "hurt_queries": [],
           "checkpoint_scores": [-0.3, -0.2]}
    lance.write_dataset(pa.Table.from_pylist([
        {**row, "contribution_id": 1, "score": 2.0, "harmful": False, "refit_delta": None, "refit_spread": None},
        {**row, "contribution_id": 6, "refit_delta": 0.01, "refit_spread": 0.04},  # inside the seed noise
        {**row, "contribution_id": 7, "refit_delta": 0.3, "refit_spread": 0.04},  # confirmed
    ], schema=INFLUENCE), str(stack.lance_dir / INFLUENCE_TABLE))
    result = close_epoch(stack, 1, load_inputs(stack), fixed_params(1000))
    assert result.slash_requests == 1
    (event,) = [e.record for e in outbox.read_epoch(stack.kafka_bootstrap, 1) if e.type == "SlashRequested"]
    assert (event["contribution_id"], event["reason_code"], event["score_high"], event["refit_delta"],
            event["refit_spread"]) == (7, 2, -0.2, 0.3, 0.04)
    build_audit_db(stack)
    con = duckdb.connect(str(stack.audit_db), read_only=True)
    audited = con.execute("SELECT contribution_id, score, score_low, score_high, robust_z, refit_delta, refit_spread "
                          "FROM slash_requests").fetchall()
    outcomes = dict(con.execute("SELECT contribution_id, outcome FROM payouts").fetchall())
    con.close()
    assert audited == [(7, -0.5, -0.8, -0.2, -6.0, 0.3, 0.04)]
    assert outcomes == {1: "paid", 6: "harmful_unconfirmed", 7: "harmful_influence"}


def test_a_datanet_whose_only_eval_query_is_held_out_fails_alone_without_nan(stack):
    texts, i = [], 0
    while len(texts) < 2:  # one contribution in the holdout bucket, one trained on: no other eval query exists
        text = f"note {i}: simmer the soup with salt ."
        held = held_out(rows(1, [("0x" + "ab" * 20, text)])["content_hash"][0].as_py(), 10)
        if held == (len(texts) == 0):
            texts.append(text)
        i += 1
    write_version(stack, 3, rows(3, [("0x" + "ab" * 20, t) for t in texts]))
    train_latest(stack, 3, FAST, show_progress=False)
    result = run_cli(stack, "attribute", "--datanet", "3")
    assert result.returncode == 1
    assert "NaN" not in result.stdout and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "only eval query" in result.stderr

    # the Dagster asset goes through the same function: that partition fails alone, with the reason
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datanet", ["dn-3"])
    run = dg.materialize([influence_scores], partition_key="dn-3", instance=instance, raise_on_error=False,
                         resources={"data_dir": DataDirResource(path=str(stack.data_dir)),
                                    "kafka": KafkaResource(bootstrap=stack.kafka_bootstrap)})
    assert not run.success
    (failure,) = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "only eval query" in failure.step_failure_data.user_failure_data.description
