"""``payable govern`` on a real anvil + broker: a pool change goes propose -> vote -> queue -> execute through the
CLI, each step taken too early is refused in one line saying what to wait for, and the next epoch pays the new
pool; bad changes are refused before anyone votes on them."""

from __future__ import annotations

import json

import contracts
from contracts.deploy import DeployParams
from tests.test_governed_params import closed_line
from tests.test_rewards_emitter import run_cli
from tests.test_rewards_exactly_once import EPOCH_1, write_inputs

UNIT = 10**18


def ok(stack, *args: str) -> dict:
    result = run_cli(stack, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def refused(stack, *args: str, code: int = 1) -> str:
    result = run_cli(stack, *args)
    assert result.returncode == code, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    if code == 1:  # refused by payable: one line; code 2 is click's usage error, whose last line says why
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_pool_change_through_the_cli_then_the_next_epoch_pays_it(stack, chain, deployment):
    launch = DeployParams()
    assert ok(stack, "govern", "delegate")["votes"] == str(launch.supply - launch.treasury_share)
    new_pool = 4_321 * UNIT
    proposal = ok(stack, "govern", "propose", "--set", f"epochPool={new_pool}", "--description", "Pool 4,321 OPEN")
    pid = proposal["proposal"]
    assert proposal["state"] == "pending" and proposal["description"] == "Pool 4,321 OPEN"

    assert "is pending, not active: its vote opens after block" in refused(stack, "govern", "vote", pid)
    ok(stack, "mine", str(launch.voting_delay_blocks + 1))
    voted = ok(stack, "govern", "vote", pid)
    assert voted["state"] == "active" and voted["weight"] == str(launch.supply - launch.treasury_share)
    assert "already voted" in refused(stack, "govern", "vote", pid)
    assert "is active, not succeeded: its vote is open until block" in refused(stack, "govern", "queue", pid)

    ok(stack, "mine", str(launch.voting_period_blocks + 1))
    assert ok(stack, "govern", "queue", pid)["state"] == "queued"
    early = refused(stack, "govern", "execute", pid)
    assert "queued in the timelock until timestamp" in early and "payable mine 1 --seconds" in early
    ok(stack, "mine", "1", "--seconds", str(launch.timelock_delay_s + 1))
    executed = ok(stack, "govern", "execute", pid)
    assert executed["state"] == "executed" and executed["parameters"]["epochPool"] == str(new_pool)
    parameters = chain.contract(contracts.PROTOCOL_PARAMETERS, deployment.parameters)
    assert parameters.functions.epochPool().call() == new_pool
    assert "is executed, not queued" in refused(stack, "govern", "execute", pid)

    write_inputs(stack, EPOCH_1)
    paid = run_cli(stack, "reward")
    assert paid.returncode == 0, paid.stderr
    assert closed_line(paid)["pool"] == str(new_pool), "the next epoch pays the governed pool"
    listed = [json.loads(line) for line in run_cli(stack, "govern", "status").stdout.splitlines()]
    assert [p["state"] for p in listed[:-1]] == ["executed"] and listed[-1]["parameters"]["epochPool"] == str(new_pool)


BAD_CHANGES = [
    ("poolSize=1", "unknown parameter poolSize; governed: epochPool"),
    ("epochPool=1.5", "epochPool is a whole number"),
    ("usageSourcesBps=70000", "does not fit the contract's uint16"),
    ("usageSourcesBps=10001", "setUsageTerms(1000000000000000, 10001, 4000, 1000) would revert at execution: "
                              "BpsOutOfRange"),
    ("requireRefit=maybe", "requireRefit is true or false"),
    ("refitMarginBps=1000001", "would revert at execution: RefitMarginOutOfRange"),
]


def test_a_change_the_contract_would_refuse_is_refused_before_the_vote(stack, chain, deployment):
    for change, message in BAD_CHANGES:
        assert message in refused(stack, "govern", "propose", "--set", change), change
    governor = chain.contract(contracts.GOVERNOR, deployment.governor)
    assert governor.events.ProposalCreated().get_logs(from_block=deployment.deploy_block) == [], "nothing proposed"
    assert "is not NAME=VALUE" in refused(stack, "govern", "propose", "--set", "epochPool", code=2)
    assert "no proposal 12345 on this deployment's Governor" in refused(stack, "govern", "status", "12345")
    assert "'one' is not a whole number" in refused(stack, "govern", "vote", "one", code=2)
