"""Governed parameters on a real anvil + broker: only the Governor and timelock change them, the pipeline pays by
them at the block an epoch closes (through the CLI and through Dagster), and the treasury funds epochs only
within the allowance governance approved."""

from __future__ import annotations

import json

import dagster as dg
import pytest

import contracts
from assets.rewards import onchain_payouts, reward_epochs
from contracts.deploy import DeployParams
from orchestration.resources import resources_for
from payable.chain import ChainError
from payable.keys import Role, dev_account
from pipelines.audit.epoch_rows import epoch_rows
from pipelines.log_views import read_view
from pipelines.rewards import epochs, outbox
from pipelines.rewards.params import GovernedParams, governed_params
from schemas import rewards as schema
from schemas import topics
from tests.chain_helpers import enact, mine
from tests.test_rewards_emitter import logs, run_cli
from tests.test_rewards_exactly_once import EPOCH_1, RETRAINED, lines, write_inputs

UNIT = 10**18
DEPLOYER, OPERATOR = dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value)
RETRAINED_AGAIN = [(cid, who, datanet, 3, score) for cid, who, datanet, _, score in RETRAINED]  # version 3


@pytest.fixture
def parameters(chain, deployment):
    return chain.contract(contracts.PROTOCOL_PARAMETERS, deployment.parameters)


@pytest.fixture
def voter(chain, token):
    """The deployer's OPEN delegated to itself: enough voting power for quorum."""
    chain.transact(DEPLOYER, token.functions.delegate(DEPLOYER.address))
    mine(chain)
    return DEPLOYER


def closed_line(result) -> dict:
    return next(line for line in lines(result) if "closed" in line)


def closed_marker(settings, epoch_id: int) -> dict:
    return outbox.closed_epochs(settings.kafka_bootstrap)[epoch_id]


def test_launch_values_are_read_at_a_block_and_only_the_timelock_sets_them(chain, deployment, parameters):
    launch = DeployParams()
    read = governed_params(chain, deployment)
    assert read == GovernedParams(*launch.protocol_values(), block=chain.w3.eth.block_number,
                                  address=deployment.parameters.lower())
    assert parameters.functions.owner().call() == deployment.timelock
    for account in (DEPLOYER, OPERATOR):
        with pytest.raises(ChainError, match="OwnableUnauthorizedAccount"):
            chain.transact(account, parameters.functions.setEpochPool(1))
    timelock = chain.contract(contracts.TIMELOCK, deployment.timelock)
    proposer = timelock.functions.PROPOSER_ROLE().call()
    assert not timelock.functions.hasRole(proposer, DEPLOYER.address).call(), "the bootstrap proposer is gone"
    assert timelock.functions.getMinDelay().call() == launch.timelock_delay_s


@pytest.mark.parametrize("call, error", [
    (("setUsageTerms", [1, 10_001, 0, 0]), "BpsOutOfRange"),
    (("setUsageTerms", [1, 5_000, 3_000, 1_000]), "SplitNotWhole"),
    (("setHarmRule", [1_000_001, True]), "RefitMarginOutOfRange"),
    (("setReputationPrior", [0, 0]), "EmptyPrior"),
])
def test_a_proposal_with_a_bad_value_reverts_at_execution_and_changes_nothing(chain, deployment, parameters, voter,
                                                                             call, error):
    before = parameters.functions.all().call()
    with pytest.raises(ChainError, match=f"execute would revert: {error}"):
        enact(chain, deployment, [(parameters, *call)], f"bad value: {call}", voter)
    assert parameters.functions.all().call() == before


def test_a_proposal_changes_the_pool_and_the_next_epoch_pays_it_through_the_cli_and_dagster(
        stack, chain, deployment, parameters, voter):
    launch = DeployParams()
    write_inputs(stack, EPOCH_1)
    first = run_cli(stack, "reward")
    assert first.returncode == 0, first.stderr
    assert closed_line(first)["pool"] == str(launch.epoch_pool)
    marker = closed_marker(stack, 1)
    assert GovernedParams.from_json(marker["params"]).epoch_pool == launch.epoch_pool

    new_pool = 1_234 * UNIT
    executed = enact(chain, deployment, [(parameters, "setEpochPool", [new_pool]),
                                         (parameters, "setReputationPrior", [3, 1])],
                     "Pool 1,234 OPEN; newcomers start at 3/4 reputation", voter)
    write_inputs(stack, RETRAINED)
    second = run_cli(stack, "reward")
    assert second.returncode == 0, second.stderr
    marker = closed_marker(stack, 2)
    recorded = GovernedParams.from_json(marker["params"])
    assert (recorded.epoch_pool, recorded.prior_accepted, recorded.prior_rejected) == (new_pool, 3, 1)
    assert marker["params_block"] == recorded.block >= executed["blockNumber"]
    assert json.loads(marker["rules"])["prior_accepted"] == 3, "the split ran by the governed prior"
    epoch = epochs.load_epoch(stack, 2)
    assert epoch.pool == new_pool and epoch.total + epoch.carry_out == new_pool + epoch.carry_in

    newer_pool = 777 * UNIT
    enact(chain, deployment, [(parameters, "setEpochPool", [newer_pool])], "Pool 777 OPEN", voter)
    write_inputs(stack, RETRAINED_AGAIN)
    result = dg.materialize([reward_epochs, onchain_payouts], resources=resources_for(stack))
    assert result.success
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert metadata["reward_epochs"]["epoch_id"].value == 3 and metadata["reward_epochs"]["pool"].value == str(
        newer_pool)
    marker = closed_marker(stack, 3)
    assert GovernedParams.from_json(marker["params"]).epoch_pool == newer_pool
    assert metadata["reward_epochs"]["params_block"].value == marker["params_block"]
    audited = epoch_rows(read_view(stack.kafka_bootstrap, topics.REWARDS_OUTBOX),
                         read_view(stack.kafka_bootstrap, topics.CHAIN_FACTS), None, {}).reward_epochs
    assert [(r["epoch_id"], GovernedParams.from_json(r["params"]).epoch_pool, r["params_block"]) for r in audited] == [
        (n, pool, closed_marker(stack, n)["params_block"])
        for n, pool in ((1, launch.epoch_pool), (2, new_pool), (3, newer_pool))], "the audit's reward_epochs rows"

    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    published = {e["args"]["epochId"]: e["args"]["total"] for e in logs(chain, distributor, "EpochPublished")}
    assert published == {n: epochs.load_epoch(stack, n).total for n in (1, 2, 3)}
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    fundings = logs(chain, token, "Transfer", to=deployment.distributor)
    assert {f["args"]["from"] for f in fundings} == {deployment.timelock}, "the treasury funded every epoch"


def test_the_operator_funds_only_within_the_allowance_governance_approved(stack, chain, deployment, token, voter):
    write_inputs(stack, EPOCH_1)
    enact(chain, deployment, [(token, "approve", [OPERATOR.address, UNIT])], "Funding allowance 1 OPEN", voter)
    refused = run_cli(stack, "reward")
    assert refused.returncode == 1
    fund = next(line for line in lines(refused) if line.get("step") == "fund")
    assert fund["state"] == "failed" and "ERC20InsufficientAllowance" in fund["detail"], fund
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    assert logs(chain, distributor, "EpochPublished") == [], "not funded: not published"

    allowance = DeployParams().epoch_pool
    enact(chain, deployment, [(token, "approve", [OPERATOR.address, allowance])], "Allowance: one pool", voter)
    rerun = run_cli(stack, "reward")
    assert rerun.returncode == 0, rerun.stderr
    total = epochs.load_epoch(stack, 1).total
    assert token.functions.allowance(deployment.timelock, OPERATOR.address).call() == allowance - total


def test_an_epoch_closed_before_governed_parameters_still_decodes(stack):
    writer = outbox.OutboxWriter(stack.kafka_bootstrap)
    old = {"event_id": "0x01", "epoch_id": 1, "merkle_root": "0x" + "11" * 32, "total": "5", "pool": "5",
           "carry_in": "0", "carry_out": "0", "accounts": 1, "slash_requests": 0, "first_offset": 0,
           "inputs_digest": "0x", "rules": "{}", "influence_runs": ["1:1:a:tracin"]}
    writer.append(schema.REWARD_EPOCH_CLOSED_V1, [old])
    writer.close()
    assert closed_marker(stack, 1) == {**schema.USAGE_BATCH_V1, **old}, "read as an epoch that paid no usage"
