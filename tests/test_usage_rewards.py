"""Invariant 8 through every entry point: a served call is paid in at most one epoch, on-chain exactly once.

Real anvil + broker. The inputs are real log events as the stages leave them: verdicts and a Lance influence
table (training half), usage events as ``payable serve`` writes them, ContextAttributed weights as the
context-attribution stage writes them, a DatanetCreated fact naming the datanet's owner (the trainer paid).
Epoch 1 pays datanet 1's and 2's training runs (on adapter ``a``); the calls to adapter ``a`` wait for it and are
paid by epoch 2 (the plain call's training share by its answer's own influence list, the RAG call's by the
run); a call to an adapter nobody knows stays unpaid with its reason, and nothing is lost.
Calls are signed by a serving agent whose AgentRegistered fact is on the log; one unsigned call and one signed
by an agent that never staked are refused with their reasons through every entry point.
"""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

import contracts
from assets import rewards as reward_assets
from orchestration.resources import resources_for
from payable.keys import Role, dev_account
from pipelines.audit.epoch_rows import epoch_rows
from pipelines.audit.tables import create_statements
from pipelines.audit.usage_rows import usage_tables
from pipelines.log_views import read_view
from pipelines.rewards import epochs, outbox
from pipelines.rewards.cycle import close_due_epoch
from pipelines.rewards.epochs import NothingToPay, close_epoch
from pipelines.rewards.inputs import load_inputs
from pipelines.rewards.usage import earnings_of, load_usage, usage_root
from pipelines.rewards.usage_terms import terms_of
from schemas import events, topics
from schemas import rewards as schema
from schemas.context_attribution import CONTEXT_ATTRIBUTED
from schemas.usage import USAGE_EVENT
from serving.agent import ServingAgent
from serving.usage import usage_event
from tests.chain_helpers import fixed_params
from tests.test_audit_reconcile import documented_queries
from tests.test_rewards_emitter import logs, run_cli
from tests.test_rewards_exactly_once import (
    EPOCH_1,
    POOL,
    A,
    B,
    C,
    assert_each_epoch_on_chain_once,
    lines,
    send_all,
    write_inputs,
)
from tests.test_rewards_inputs import fact

OWNER = "0x" + "0f" * 20
STAKED, UNSTAKED = ServingAgent(dev_account(Role.AGENT.value)), ServingAgent(dev_account(12))
ASSETS = [reward_assets.reward_epochs, reward_assets.onchain_payouts, reward_assets.usage_rewards,
          reward_assets.payout_total_equals_pool_minus_carry, reward_assets.every_usage_event_paid_at_most_once,
          reward_assets.usage_payouts_equal_fees_minus_carry]
RAG_SOURCE = {"datanet_id": 1, "contribution_id": 2, "contributor": B, "chunk_id": "2:0", "dataset_version": 1,
              "score": 0.8}
OTHER_SOURCE = {"datanet_id": 2, "contribution_id": 3, "contributor": C, "chunk_id": "3:0", "dataset_version": 1,
                "score": 0.4}


# the plain call asked for attribution: its answer leaned on contribution 2 (B); 1 (A) hurt it; 99 was never paid
INFLUENCES = [{"rank": 1, "contribution_id": 2, "score": 0.5}, {"rank": 2, "contribution_id": 99, "score": 0.3},
              {"rank": 3, "contribution_id": 1, "score": -0.2}]


def call(request_id: str, *, adapter: str = "a", datanet: int = 1, sources=(),
         agent: ServingAgent | None = STAKED, influences=None) -> dict:
    """A served call as ``payable serve`` writes it, signed by ``agent`` (None: unsigned)."""
    event = usage_event(request_id=request_id, model=adapter, adapters=[(adapter, datanet, 1, 1.0)],
                        base_model_hash="0x" + "ba" * 32, prompt_tokens=30, completion_tokens=12, latency_s=0.1,
                        caller=None, finish_reason="stop", retrieved_sources=list(sources), influences=influences)
    return event if agent is None else agent.sign(event)


def produce(settings, event_type: events.EventType, records: list[dict], key: str = "event_id") -> None:
    send_all(settings, event_type, records, key=lambda r: str(r[key]).encode())


def write_usage(settings) -> dict[str, dict]:
    """Three served calls on adapter ``a`` (one RAG answer, attributed), one sent twice, one to an unknown adapter,
    one unsigned and one by an agent that never staked; the datanet's owner and the staked agent on the chain-facts
    log."""
    served = {"plain": call("req-plain", influences=INFLUENCES),
              "rag": call("req-rag", sources=[RAG_SOURCE, OTHER_SOURCE]),
              "unknown": call("req-unknown", adapter="ad-nobody-knows"), "unsigned": call("req-unsigned", agent=None),
              "unstaked": call("req-unstaked", agent=UNSTAKED)}
    produce(settings, USAGE_EVENT, [served["plain"], served["rag"], served["plain"], served["unknown"],
                                    served["unsigned"], served["unstaked"]])
    produce(settings, events.AGENT_REGISTERED, [fact("AgentRegistered", 1002, agent=STAKED.address,
                                                     endpoint="http://127.0.0.1:8000", stake="1")])
    produce(settings, CONTEXT_ATTRIBUTED, [{
        "event_id": "ca-1", "usage_event_id": served["rag"]["event_id"], "method": "factorial", "forward_passes": 8,
        "sources": [{"contribution_id": 2, "chunk_id": "2:0", "weight": 0.75},
                    {"contribution_id": 3, "chunk_id": "3:0", "weight": 0.25}]}], key="usage_event_id")
    produce(settings, events.DATANET_CREATED, [fact(
        "DatanetCreated", 1001, datanet_id=1, owner=OWNER, metadata_uri="ipfs://x", min_stake="0",
        max_contribution_size=1000, permissioned=False, validators=[])], key="datanet_id")
    return served


def usage_paid(settings) -> dict[str, set[int]]:
    """usage event id -> the epochs whose committed lines pay it."""
    paid: dict[str, set[int]] = {}
    for epoch_id, records in outbox.committed(settings.kafka_bootstrap, (schema.USAGE_ALLOCATED,)).items():
        for r in records:
            paid.setdefault(r["usage_event_id"], set()).add(epoch_id)
    return paid


def assert_paid_once(settings, served: dict[str, dict], epoch_id: int) -> None:
    paid = usage_paid(settings)
    assert paid == {served["plain"]["event_id"]: {epoch_id}, served["rag"]["event_id"]: {epoch_id}}
    closed = outbox.closed_epochs(settings.kafka_bootstrap)[epoch_id]
    assert closed["usage_events"] == 2 and closed["usage_root"] == usage_root(sorted(paid))
    fee = terms_of(fixed_params(POOL)).fee(30, 12)
    assert int(closed["usage_fees"]) == 2 * fee
    assert int(closed["usage_fees"]) + int(closed["usage_carry_in"]) - int(closed["usage_carry_out"]) == sum(
        e["amount"] for u in paid for e in earnings_of(settings, u))
    rag = {(e["account"], e["role"], e["contribution_id"]): e["amount"]
           for e in earnings_of(settings, served["rag"]["event_id"])}
    assert rag[(B, "source", 2)] == 3 * rag[(C, "source", 3)], "sources split by attribution weight (0.75 / 0.25)"
    assert rag[(OWNER, "trainer", None)] == fee // 10 and {r for _, r, _ in rag} == {"source", "training", "trainer"}
    assert not earnings_of(settings, served["unknown"]["event_id"]), "the unknown adapter's call is not paid"
    plain = {(e["account"], e["role"], e["contribution_id"]) for e in earnings_of(settings, served["plain"]["event_id"])
             if e["role"] == "training"}
    assert plain == {(B, "training", 2)}, "the answer's own positive influence on a paid contribution decides"
    assert {c for _, r, c in rag if r == "training"} == {1, 2}, "without an influence list: the run's shares"


def assert_usage_anchored_once(settings, chain, deployment, epoch_id: int) -> None:
    attribution = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
    closed = outbox.closed_epochs(settings.kafka_bootstrap)[epoch_id]
    anchored = logs(chain, attribution, "UsageAnchored")
    assert [(e["args"]["epochId"], "0x" + e["args"]["usageRoot"].hex(), e["args"]["count"]) for e in anchored] == [
        (epoch_id, closed["usage_root"], closed["usage_events"])], "the usage batch is anchored once"


def test_cli_killed_after_publish_and_after_push_then_rerun_pays_each_call_once(stack, chain, deployment):
    write_inputs(stack, EPOCH_1)
    served = write_usage(stack)
    killed = run_cli(stack, "reward", crash_at="publish:after_receipt")
    assert killed.returncode == -9, killed.stderr
    assert {"excluded_usage": served["plain"]["event_id"],
            "reason": "training run of adapter a not paid yet"} in lines(killed)
    rerun = run_cli(stack, "reward")
    assert rerun.returncode == 0, rerun.stderr
    assert not usage_paid(stack), "epoch 1 pays the training runs; the calls wait for them"

    killed = run_cli(stack, "reward", crash_at="anchor:after_intent")
    assert killed.returncode == -9, killed.stderr
    (usage,) = [line["usage"] for line in lines(killed) if "usage" in line]
    assert usage["epoch"] == 2 and usage["events"] == 2
    killed = run_cli(stack, "reward", crash_at="push:after_receipt")
    assert killed.returncode == -9, killed.stderr
    rerun = run_cli(stack, "reward")
    assert rerun.returncode == 0, rerun.stderr
    assert_paid_once(stack, served, 2)
    assert_usage_anchored_once(stack, chain, deployment, 2)
    assert epochs.load_epoch(stack, 2).pool == 0, "a usage-only epoch allots no training pool"
    assert_each_epoch_on_chain_once(stack, chain, deployment, [1, 2])

    block = chain.w3.eth.block_number
    idle = run_cli(stack, "reward")
    assert idle.returncode == 0, idle.stderr
    assert {"excluded_usage": served["unknown"]["event_id"], "reason": "unknown adapter ad-nobody-knows"} in lines(idle)
    assert {"excluded_usage": served["unsigned"]["event_id"], "reason": "unsigned"} in lines(idle)
    assert {"excluded_usage": served["unstaked"]["event_id"],
            "reason": f"agent_not_staked: {UNSTAKED.address}"} in lines(idle), "an unstaked agent's usage is refused"
    assert not any(line.get("excluded_usage") == served["plain"]["event_id"] for line in lines(idle)), \
        "a call paid before is not listed again"
    assert lines(idle)[-1] == {"nothing_due": "nothing is due: no influence run or usage event is left to pay"}
    assert chain.w3.eth.block_number == block, "nothing due: no transaction"


def test_close_epoch_called_directly_pays_no_call_twice(stack, deployment):
    write_inputs(stack, EPOCH_1)
    served = write_usage(stack)
    close_due_epoch(stack, deployment)  # epoch 1: the training runs

    def usage():
        closed = outbox.closed_epochs(stack.kafka_bootstrap)
        committed = outbox.committed(stack.kafka_bootstrap, (schema.CONTRIBUTION_ALLOCATED, schema.USAGE_ALLOCATED))
        return load_usage(stack, deployment, closed, committed)

    second = close_epoch(stack, 2, load_inputs(stack), fixed_params(POOL), usage=usage())
    assert second.usage_events == 2 and second.usage_paid == second.usage_fees - second.usage_carry_out
    assert close_epoch(stack, 2, load_inputs(stack), fixed_params(POOL), usage=usage()).already_closed
    with pytest.raises(NothingToPay, match="paid in epoch 2"):
        close_epoch(stack, 3, load_inputs(stack), fixed_params(POOL), usage=usage())
    assert_paid_once(stack, served, 2)

    epoch = epochs.load_epoch(stack, 2)
    shutil.rmtree(epochs.epoch_dir(stack, 2))
    replayed = epochs.replay_epoch(stack, 2)
    assert (replayed.root, replayed.usage_fees, replayed.usage_carry_out) == (
        epoch.root, epoch.usage_fees, epoch.usage_carry_out), "the log rebuilds the usage epoch"
    assert replayed.balanced

    audit = epoch_rows(read_view(stack.kafka_bootstrap, topics.REWARDS_OUTBOX),
                       read_view(stack.kafka_bootstrap, topics.CHAIN_FACTS), None, {})
    assert sorted((r["usage_event_id"], r["account"], r["role"], r["contribution_id"], int(r["amount"]))
                  for r in audit.usage_payouts) == sorted(
        (u, e["account"], e["role"], e["contribution_id"], e["amount"])
        for u in (served["plain"]["event_id"], served["rag"]["event_id"]) for e in earnings_of(stack, u))
    (row,) = [r for r in audit.reward_epochs if r["epoch_id"] == 2]
    assert (int(row["usage_fees"]), row["usage_events"], row["allocation_source"]) == (second.usage_fees, 2, "log")
    assert all(int(p["amount"]) == 0 for p in audit.payouts if p["epoch_id"] == 2), "epoch 2 paid no training"

    usage_events, _ = usage_tables(read_view(stack.kafka_bootstrap, topics.USAGE),
                                   read_view(stack.kafka_bootstrap, topics.USAGE_ATTRIBUTION))
    con = duckdb.connect()
    for statement in create_statements():
        con.execute(statement)
    for name, rows in (("usage_events", usage_events), ("usage_payouts", audit.usage_payouts)):
        con.register("source", pa.Table.from_pylist(rows))
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM source")
        con.unregister("source")
    con.execute("SET VARIABLE contribution_id = 2")
    earned = con.execute(documented_queries()["usage-earned"]).fetchall()
    assert sorted((u, role, int(x)) for u, role, x, *_ in earned) == sorted(
        (u["event_id"], e["role"], e["amount"]) for u in (served["plain"], served["rag"])
        for e in earnings_of(stack, u["event_id"]) if e["contribution_id"] == 2), "what contribution 2 earned this week"


def test_dagster_assets_pay_each_call_once(stack, chain, deployment):
    write_inputs(stack, EPOCH_1)
    served = write_usage(stack)

    def materialize() -> dict[str, dict]:
        result = dg.materialize(ASSETS, resources=resources_for(stack))
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert len(checks) == 3 and all(checks.values()), checks
        return {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}

    materialize()  # epoch 1: the training runs
    second = materialize()
    assert second["reward_epochs"]["epoch_id"].value == 2 and second["usage_rewards"]["usage_events_paid"].value == 2
    excluded = second["usage_rewards"]["excluded_usage"].value
    assert "ad-nobody-knows" in excluded and "unsigned" in excluded and f"agent_not_staked: {UNSTAKED.address}" in \
        excluded, "an unstaked agent's usage is refused"
    block = chain.w3.eth.block_number
    third = materialize()
    assert not third["reward_epochs"]["closed_now"].value and chain.w3.eth.block_number == block
    assert_paid_once(stack, served, 2)
    assert_each_epoch_on_chain_once(stack, chain, deployment, [1, 2])
    assert_usage_anchored_once(stack, chain, deployment, 2)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    assert token.functions.balanceOf(chain.w3.to_checksum_address(OWNER)).call() == sum(
        e["amount"] for u in (served["plain"], served["rag"]) for e in earnings_of(stack, u["event_id"])
        if e["account"] == OWNER), "the trainer holds exactly its usage earnings"
    assert A in epochs.load_epoch(stack, 2).accounts
