"""Invariant 4 through every entry point: each influence run is paid in one epoch, whoever closes it.

Real anvil + broker; the inputs are real log events (verdicts) and a real Lance influence table, as the
attribution stage leaves them. Datanet 1 is retrained (version 2) after epoch 1; datanet 2 is not, so
epoch 2 must pay datanet 1's new model only; datanet 3 scored NaN, so it is never paid and never stops
the others.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict

import dagster as dg
import pyarrow as pa
import pytest

import contracts
from assets.rewards import onchain_payouts, reward_epochs
from orchestration.resources import resources_for
from payable import kafka_log
from pipelines.rewards import epochs, outbox
from pipelines.rewards.epochs import NothingToPay, close_epoch
from pipelines.rewards.inputs import INFLUENCE_TABLE, INFLUENCE_WITH_HARM, load_inputs
from schemas import events, topics
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.chain_helpers import fixed_params
from tests.test_rewards_emitter import logs, run_cli
from tests.test_rewards_inputs import verdict

A, B, C, D, E = ("0x" + f"{n:02x}" * 20 for n in (0xA1, 0xB2, 0xC3, 0xD4, 0xE5))
POOL = 1_000 * 10**18
# (contribution, contributor, datanet, dataset version, score)
EPOCH_1 = [(1, A, 1, 1, 3.0), (2, B, 1, 1, 1.0), (3, C, 2, 1, 2.0), (4, A, 2, 1, 1.0), (5, D, 3, 1, math.nan)]
RETRAINED = [(1, A, 1, 2, 1.0), (2, B, 1, 2, 1.0), (6, E, 1, 2, 2.0)]  # datanet 1, version 2
NAN_RUN = "3:1:a:tracin"


def send_all(settings, event_type: events.EventType, records: list[dict], key, deadline_s: float = 60.0) -> None:
    """Writes ``records`` and waits until the broker acknowledged every one, sending again what it refused
    (a topic just created may answer NotLeaderForPartition for a moment; the records are idempotent)."""
    kafka_log.ensure_topics(settings.kafka_bootstrap)
    deadline = time.monotonic() + deadline_s
    while records:
        producer = kafka_log.make_producer(settings.kafka_bootstrap)
        futures = kafka_log.produce(producer, event_type, records, key=key)
        producer.flush()
        producer.close()
        records = [r for r, f in zip(records, futures, strict=True) if not f.succeeded()]
        if records and time.monotonic() > deadline:
            raise TimeoutError(f"{len(records)} {event_type.name} records not acknowledged in {deadline_s:g} s")


def write_inputs(settings, rows) -> None:
    """The verdicts on the log (once per contribution) and the influence table, as the stages leave them."""
    send_all(settings, CONTRIBUTION_VERDICT,
             [{**verdict(cid, who, "accepted"), "datanet_id": d} for cid, who, d, _, _ in rows],
             key=lambda r: topics.datanet_key(r["datanet_id"]))
    import lance  # here, not at collection: lance's threads make later forks unsafe

    table = pa.Table.from_pylist([
        {"contribution_id": cid, "contributor": who, "datanet_id": d, "dataset_version": v, "adapter_id": "a",
         "method": "tracin", "score": score, "rank": 0, "harmful": False, "score_low": score, "score_high": score,
         "robust_z": 0.0} for cid, who, d, v, score in rows],
        schema=INFLUENCE_WITH_HARM)
    path = settings.lance_dir / INFLUENCE_TABLE
    lance.write_dataset(table, str(path), mode="append" if path.exists() else "create")


def paid_runs(settings) -> dict[int, list[str]]:
    return {e: r["influence_runs"] for e, r in sorted(outbox.closed_epochs(settings.kafka_bootstrap).items())}


def assert_each_epoch_on_chain_once(settings, chain, deployment, epoch_ids: list[int]) -> None:
    """One publish, one funding and one payment per account per epoch, seen in events and balances."""
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    closed = [epochs.load_epoch(settings, e) for e in epoch_ids]
    assert sorted(e["args"]["epochId"] for e in logs(chain, distributor, "EpochPublished")) == epoch_ids
    assert [t["args"]["value"] for t in logs(chain, token, "Transfer", to=deployment.distributor)] == [
        e.total for e in closed], "the treasury funded each epoch once"
    claimed = sorted((c["args"]["epochId"], c["args"]["account"].lower(), c["args"]["amount"])
                     for c in logs(chain, distributor, "RewardClaimed"))
    assert claimed == sorted((e.epoch_id, a, x) for e in closed for a, x in zip(e.accounts, e.amounts, strict=True))
    owed: dict[str, int] = defaultdict(int)
    for e in closed:
        for a, x in zip(e.accounts, e.amounts, strict=True):
            owed[a] += x
    for account, amount in owed.items():
        assert token.functions.balanceOf(chain.w3.to_checksum_address(account)).call() == amount
    assert token.functions.balanceOf(deployment.distributor).call() == 0


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_cli_killed_after_publish_and_after_push_then_rerun_pays_each_run_once(stack, chain, deployment):
    write_inputs(stack, EPOCH_1)
    killed = run_cli(stack, "reward", crash_at="publish:after_receipt")
    assert killed.returncode == -9, killed.stderr
    rerun = run_cli(stack, "reward")
    assert rerun.returncode == 0, rerun.stderr
    assert not any("closed" in line for line in lines(rerun)), "the rerun resumes epoch 1, it closes nothing"
    assert paid_runs(stack) == {1: ["1:1:a:tracin", "2:1:a:tracin"]}, "datanet 3 scored NaN: not paid"
    assert {"excluded_run": NAN_RUN, "reason": "non-finite influence scores (NaN or infinite)"} in lines(killed)

    write_inputs(stack, RETRAINED)
    killed = run_cli(stack, "reward", crash_at="push:after_receipt")
    assert killed.returncode == -9, killed.stderr
    assert {"excluded_run": "2:1:a:tracin", "reason": "paid in epoch 1"} in lines(killed)
    rerun = run_cli(stack, "reward")
    assert rerun.returncode == 0, rerun.stderr
    assert paid_runs(stack) == {1: ["1:1:a:tracin", "2:1:a:tracin"], 2: ["1:2:a:tracin"]}
    assert set(epochs.load_epoch(stack, 2).accounts) == {A, B, E}, "epoch 2 pays datanet 1's new model only"
    assert_each_epoch_on_chain_once(stack, chain, deployment, [1, 2])

    block = chain.w3.eth.block_number
    idle = run_cli(stack, "reward")
    assert idle.returncode == 0, idle.stderr
    assert lines(idle)[-1] == {"nothing_due": "nothing is due: no influence run or usage event is left to pay"}
    for epoch in ("7", "0", "2"):
        refused = run_cli(stack, "reward", "--epoch", epoch)
        assert refused.returncode == 1 and refused.stderr.strip() == (f"error: epoch {epoch} is not due: nothing is "
                                                                      "due: no influence run or usage event is left "
                                                                      "to pay"), refused.stderr
    assert chain.w3.eth.block_number == block, "nothing due: no transaction"
    assert sorted(paid_runs(stack)) == [1, 2]


def test_close_epoch_called_directly_pays_no_run_twice(stack):
    write_inputs(stack, EPOCH_1)
    first = close_epoch(stack, 1, load_inputs(stack), fixed_params(POOL))
    assert [(x.run, x.reason) for x in first.excluded] == [(NAN_RUN, "non-finite influence scores (NaN or infinite)")]
    with pytest.raises(NothingToPay, match=r"epoch 2 has nothing to pay .*1:1:a:tracin: paid in epoch 1"):
        close_epoch(stack, 2, load_inputs(stack), fixed_params(POOL))
    again = close_epoch(stack, 1, load_inputs(stack), fixed_params(POOL))
    assert again.already_closed, "closing epoch 1 again: a no-op"

    write_inputs(stack, RETRAINED)
    second = close_epoch(stack, 2, load_inputs(stack), fixed_params(POOL))
    assert paid_runs(stack)[2] == ["1:2:a:tracin"]
    assert second.total + second.carry_out == POOL + first.carry_out
    with pytest.raises(NothingToPay):
        close_epoch(stack, 3, load_inputs(stack), fixed_params(POOL))


def test_dagster_assets_pay_each_run_once(stack, chain, deployment):
    write_inputs(stack, [row for row in EPOCH_1 if row[2] == 2])  # datanet 2 first, closed by a script
    close_epoch(stack, 1, load_inputs(stack), fixed_params(POOL))
    write_inputs(stack, [row for row in EPOCH_1 if row[2] != 2])

    def materialize() -> dict[str, dict]:
        result = dg.materialize([reward_epochs, onchain_payouts], resources=resources_for(stack))
        assert result.success
        return {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}

    first = materialize()  # epoch 1 is closed but not on-chain: this run finishes it and closes nothing
    assert first["reward_epochs"]["epoch_id"].value == 1 and not first["reward_epochs"]["closed_now"].value
    assert first["onchain_payouts"]["epoch_id"].value == 1

    second = materialize()
    assert second["reward_epochs"]["epoch_id"].value == 2 and second["reward_epochs"]["closed_now"].value
    excluded = second["reward_epochs"]["excluded_runs"].value
    assert NAN_RUN in excluded and "2:1:a:tracin | paid in epoch 1" in excluded
    assert paid_runs(stack) == {1: ["2:1:a:tracin"], 2: ["1:1:a:tracin"]}, "datanet 2 is not paid again"
    assert second["onchain_payouts"]["epoch_id"].value == 2
    assert_each_epoch_on_chain_once(stack, chain, deployment, [1, 2])

    block = chain.w3.eth.block_number
    third = materialize()
    assert not third["reward_epochs"]["closed_now"].value and sorted(paid_runs(stack)) == [1, 2]
    assert "every closed epoch is on-chain" in third["onchain_payouts"]["note"].value
    assert chain.w3.eth.block_number == block
