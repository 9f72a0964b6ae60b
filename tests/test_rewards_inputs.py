"""Loading an epoch's inputs from the log and the influence table, then `payable reward` end to end."""

from __future__ import annotations

import json

import pyarrow as pa

from contracts.deploy import DeployParams
from payable import kafka_log
from pipelines.rewards.inputs import INFLUENCE_TABLE, INFLUENCE_WITH_HARM, load_inputs
from pipelines.rewards.split import HarmEvidence
from schemas import events, topics
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.test_rewards_emitter import run_cli

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20


def verdict(cid: int, who: str, status: str, reason: str | None = None, offset: int = 0) -> dict:
    return {"verdict_id": f"v-{cid}-{offset}", "fact_event_id": f"31337:0x{cid:064x}:0", "fact_block_hash": "0x00",
            "chain_id": 31337, "block_number": cid, "contribution_id": cid, "datanet_id": 1, "contributor": who,
            "content_hash": "0x" + "cd" * 32, "status": status, "reason": reason, "duplicate_of": None,
            "similarity": None, "penalize": reason == "duplicate", "detail": "", "source_partition": 0,
            "source_offset": offset, "rules_version": "test"}


def fact(name: str, cid: int, **fields) -> dict:
    return {"event_id": f"31337:0x{cid:064x}:{name}", "chain_id": 31337, "block_number": cid, "block_hash": "0x00",
            "tx_hash": f"0x{cid:064x}", "log_index": 0, "contract": "0x" + "11" * 20, **fields}


def test_loaders_take_latest_verdicts_unretracted_slashes_and_the_newest_dataset_version(stack, deployment):
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    producer = kafka_log.make_producer(stack.kafka_bootstrap)
    by_datanet = lambda r: topics.datanet_key(r["datanet_id"])  # noqa: E731
    kafka_log.produce(producer, CONTRIBUTION_VERDICT, [
        verdict(1, ALICE, "accepted"), verdict(2, BOB, "accepted"), verdict(3, BOB, "rejected", "duplicate"),
        verdict(2, BOB, "rejected", "retracted", offset=9),  # a reorg dropped contribution 2 later on
    ], key=by_datanet)
    slashed = fact("StakeSlashed", 4, contribution_id=4, datanet_id=1, validator="0x" + "33" * 20, reason_code=1,
                   amount="1")
    kafka_log.produce(producer, events.STAKE_SLASHED, [
        slashed, fact("StakeSlashed", 5, contribution_id=5, datanet_id=1, validator="0x" + "33" * 20,
                      reason_code=1, amount="1")], key=by_datanet)
    kafka_log.produce(producer, events.FACT_RETRACTED, [{
        "event_id": "retraction-4", "chain_id": 31337, "retracted_event_id": slashed["event_id"],
        "retracted_event_type": "StakeSlashed", "retracted_block_number": 4, "retracted_block_hash": "0x00",
        "datanet_id": 1, "contribution_id": 4, "reason": "reorg"}], key=by_datanet)
    producer.flush()
    producer.close()
    import lance  # here, not at collection: lance's threads make later forks unsafe

    row = {"contributor": ALICE, "datanet_id": 1, "adapter_id": "a", "method": "m", "rank": 0, "score_low": -1.0,
           "score_high": -0.5, "robust_z": -4.0, "refit_delta": None, "refit_spread": None}
    lance.write_dataset(pa.Table.from_pylist([
        {**row, "contribution_id": 1, "dataset_version": 1, "score": 100.0, "harmful": False},
        {**row, "contribution_id": 1, "dataset_version": 2, "score": 1.0, "harmful": False},
        {**row, "contribution_id": 6, "dataset_version": 1, "score": -9.0, "harmful": True},
        {**row, "contribution_id": 7, "dataset_version": 2, "score": -9.0, "harmful": True},
    ], schema=INFLUENCE_WITH_HARM), str(stack.lance_dir / INFLUENCE_TABLE))

    inputs = load_inputs(stack)
    assert inputs.verdicts.select(["contribution_id", "status", "reason"]).to_pylist() == [
        {"contribution_id": 1, "status": "accepted", "reason": None},
        {"contribution_id": 2, "status": "rejected", "reason": "retracted"},
        {"contribution_id": 3, "status": "rejected", "reason": "duplicate"},
    ]
    assert inputs.slashed == frozenset({5}), "the retracted slash of 4 does not count"
    assert inputs.influence.column("score").to_pylist() == [1.0, -9.0], "only the newest dataset version"
    assert inputs.harmful == {7: HarmEvidence(-9.0, -1.0, -0.5, -4.0)}, "attribution's harm evidence, newest version"

    result = run_cli(stack, "reward")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    pool = str(DeployParams().epoch_pool)  # the governed pool at launch
    assert lines[0]["closed"] == 1 and lines[0]["total"] == pool and lines[0]["accounts"] == 1
    assert {line["step"]: line["state"] for line in lines[1:]} == {
        "fund": "done", "publish": "done", "link": "skipped", "push-0": "done", "slash-3": "skipped"}, \
        "3 is not on this chain; no run was committed to link"
