"""AttributionRegistry on a real anvil: records hash as Python encodes them, once per id, operator only, cheap."""

from __future__ import annotations

import pytest

import contracts
from payable.chain import ChainError
from payable.keys import Role, dev_account
from pipelines.commitments import trees
from pipelines.commitments.records import InfluenceCommitment, ModelCommitment, fixed_point, hexed
from pipelines.rewards import merkle
from pipelines.rewards.runs import run_ids, runs_root

TRAINER, OPERATOR, DEPLOYER = (dev_account(r.value) for r in (Role.TRAINER, Role.OPERATOR, Role.DEPLOYER))
GAS_GOAL = 80_000


def model(adapter_id: str = "ad-1", n: int = 10) -> ModelCommitment:
    tree = trees.dataset_tree(list(range(1, n + 1)), [f"0x{i:064x}" for i in range(1, n + 1)])
    return ModelCommitment(adapter_id, 7, 3, hexed(tree.root), "0x" + "11" * 32, "0x" + "22" * 32, "0x" + "33" * 32,
                           "0x" + "44" * 32, n)


def run(adapter_id: str = "ad-1", n: int = 10) -> InfluenceCommitment:
    tree = trees.scores_tree(list(range(1, n + 1)), [(-1) ** i * i / 7 for i in range(n)])
    return InfluenceCommitment(f"7:3:{adapter_id}:tracin", adapter_id, "tracin", hexed(tree.root), n)


@pytest.fixture
def attribution(chain, deployment):
    return chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)


def test_records_hash_on_chain_as_python_encodes_them_and_stay_cheap(chain, attribution):
    m, r = model(), run()
    m_receipt = chain.transact(TRAINER, attribution.functions.commitModel(*m.args()), label="commit model")
    r_receipt = chain.transact(TRAINER, attribution.functions.commitInfluence(*r.args()), label="commit run")
    assert hexed(attribution.functions.modelRecord(m.args()[0]).call()) == m.record_hash()
    assert hexed(attribution.functions.influenceRecord(r.args()[0]).call()) == r.record_hash()
    (event,) = attribution.events.ModelCommitted().process_receipt(m_receipt)
    assert hexed(event["args"]["datasetRoot"]) == m.dataset_root and event["args"]["datasetVersion"] == 3
    assert m_receipt["gasUsed"] <= GAS_GOAL and r_receipt["gasUsed"] <= GAS_GOAL


def test_each_id_once_operator_only_and_runs_only_on_committed_models(chain, attribution):
    with pytest.raises(ChainError, match="UnknownModel"):
        chain.transact(TRAINER, attribution.functions.commitInfluence(*run().args()), label="run first")
    with pytest.raises(ChainError, match="AccessControlUnauthorizedAccount"):
        chain.transact(OPERATOR, attribution.functions.commitModel(*model().args()), label="rewards operator")
    chain.transact(TRAINER, attribution.functions.commitModel(*model().args()), label="commit")
    with pytest.raises(ChainError, match="AlreadyCommitted"):
        chain.transact(TRAINER, attribution.functions.commitModel(*model().args()), label="again")
    chain.transact(TRAINER, attribution.functions.commitInfluence(*run().args()), label="run")
    with pytest.raises(ChainError, match="AlreadyCommitted"):
        chain.transact(TRAINER, attribution.functions.commitInfluence(*run().args()), label="run again")


def test_an_epoch_links_once_to_committed_runs_by_the_rewards_operator_only(chain, attribution, token, distributor):
    runs = [run("ad-1"), run("ad-2")]
    for r in runs:
        chain.transact(TRAINER, attribution.functions.commitModel(*model(r.adapter_id).args()), label="model")
        chain.transact(TRAINER, attribution.functions.commitInfluence(*r.args()), label="run")
    names = [r.run for r in runs]
    with pytest.raises(ChainError, match="EpochNotPublished"):
        chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids(names)), label="unpublished")
    tree = merkle.build_tree([OPERATOR.address], [10])
    chain.transact(DEPLOYER, token.functions.transfer(distributor.address, 10), label="fund")
    chain.transact(OPERATOR, distributor.functions.publishEpoch(1, tree.root, 10), label="publish")
    with pytest.raises(ChainError, match="NotRewardsOperator"):
        chain.transact(TRAINER, attribution.functions.linkEpoch(1, run_ids(names)), label="trainer")
    with pytest.raises(ChainError, match="RunsNotAscending"):
        chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids(names)[::-1]), label="unsorted")
    with pytest.raises(ChainError, match="UnknownRun"):
        chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids([*names, "9:9:ad-9:m"])), label="unknown")
    receipt = chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids(names)), label="link")
    assert attribution.functions.epochRuns(1).call() == runs_root(names) and receipt["gasUsed"] <= GAS_GOAL
    with pytest.raises(ChainError, match="EpochAlreadyLinked"):
        chain.transact(OPERATOR, attribution.functions.linkEpoch(1, run_ids(names)), label="again")


def test_fixed_point_scores_are_exact_and_round_half_to_even():
    assert fixed_point(0.5) == 5 * 10**17
    assert fixed_point(-1.25) == -125 * 10**16
    assert fixed_point(2.0**-70) == 0 and fixed_point(3 * 2.0**-61) == 1  # 0.0000000000000000013 rounds to 1
    assert fixed_point(0.1) == 100000000000000006  # the float's exact value, not the decimal literal
    with pytest.raises(ValueError, match="non-finite"):
        fixed_point(float("nan"))


def test_a_usage_batch_is_anchored_once_per_published_epoch_by_the_rewards_operator_only(chain, attribution, token,
                                                                                        distributor):
    from pipelines.rewards.usage import usage_root

    root = bytes.fromhex(usage_root(["use-1", "use-2"])[2:])
    with pytest.raises(ChainError, match="EpochNotPublished"):
        chain.transact(OPERATOR, attribution.functions.anchorUsage(1, root, 2), label="unpublished")
    tree = merkle.build_tree([OPERATOR.address], [10])
    chain.transact(DEPLOYER, token.functions.transfer(distributor.address, 10), label="fund")
    chain.transact(OPERATOR, distributor.functions.publishEpoch(1, tree.root, 10), label="publish")
    with pytest.raises(ChainError, match="NotRewardsOperator"):
        chain.transact(TRAINER, attribution.functions.anchorUsage(1, root, 2), label="trainer")
    with pytest.raises(ChainError, match="EmptyRoot"):
        chain.transact(OPERATOR, attribution.functions.anchorUsage(1, bytes(32), 0), label="empty")
    receipt = chain.transact(OPERATOR, attribution.functions.anchorUsage(1, root, 2), label="anchor")
    assert (attribution.functions.usageRoot(1).call(), attribution.functions.usageCount(1).call()) == (root, 2)
    assert receipt["gasUsed"] <= GAS_GOAL
    with pytest.raises(ChainError, match="UsageAlreadyAnchored"):
        chain.transact(OPERATOR, attribution.functions.anchorUsage(1, root, 2), label="again")
