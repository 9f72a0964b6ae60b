"""Permissioned datanets end to end on a real anvil and broker: the trainer trains only under a live grant.

Grants and revocations are sent through ``payable datanet``, ingested by the real ingester, and the
training stage decides from the log, through ``payable train`` and through the ``lora_adapters`` asset.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import dagster as dg
import duckdb
import pytest

from assets.partitions import datanet_partitions, partition_key
from assets.training import lora_adapters
from contracts.deploy import deploy
from orchestration.resources import resources_for
from payable import access, services
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec, contribute, create_datanet
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines import log_views
from pipelines.attribution.synthetic import contribution_text, sentence
from pipelines.audit.build import build_audit_db
from pipelines.audit.fact_rows import access_grant_rows, chain_event_rows
from pipelines.ingest import ingest_until_head
from pipelines.training.access import AccessDenied, authorize
from pipelines.training.registry import AdapterRegistry
from pipelines.validate.run import validate_new_offsets
from schemas import topics
from tests.chain_helpers import mine
from tests.conftest import make_settings
from tests.test_cli import run
from tests.test_ingest_support import FAST, rpc

OWNER, CONTRIBUTOR = dev_account(Role.DEPLOYER.value), dev_account(Role.CONTRIBUTOR.value)
TRAINER = dev_account(Role.TRAINER.value)


@dataclass
class Stack:
    settings: Settings
    chain: Chain
    deployment: Deployment
    datanets: dict[str, int]


def _permissioned_datanet(stack: Settings, chain: Chain, deployment: Deployment, name: str, seed: int) -> int:
    rng = random.Random(seed)
    spec = DatanetSpec(name, eval_queries=tuple(" ".join(sentence(rng, "cooking") for _ in range(2))
                                                for _ in range(4)))
    store = ContentStore(stack.content_dir)
    datanet = create_datanet(chain, deployment, store, OWNER, spec, min_stake=10**18, max_contribution_size=10_000,
                             validators=[], permissioned=True)
    files = []
    for i in range(6):
        files.append(stack.data_dir / f"{name}-{i}.txt")
        files[-1].write_text(contribution_text(rng, "on_topic", 3))
    contribute(chain, deployment, store, CONTRIBUTOR, datanet, files)
    return datanet


def _sync_log(stack: Stack) -> None:
    """Mines past the confirmation depth and runs the real ingester, so the log holds every tx so far."""
    mine(stack.chain, stack.settings.confirmations)
    ingest_until_head(stack.settings, stack.deployment)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Contracts deployed, two permissioned datanets with six validated contributions each, no grant yet."""
    settings = make_settings(tmp_path_factory.mktemp("access") / "data")
    services.up(settings)
    try:
        chain = Chain(settings.rpc_url)
        deployment = deploy(chain, OWNER, dev_account(Role.OPERATOR.value).address)
        deployment.save(settings.deployment_file)
        token = chain.contract("OpenToken", deployment.token)
        chain.transact(OWNER, token.functions.transfer(CONTRIBUTOR.address, 100 * 10**18))
        datanets = {name: _permissioned_datanet(settings, chain, deployment, name, seed)
                    for seed, name in enumerate(("cli", "dagster"))}
        stack = Stack(settings, chain, deployment, datanets)
        _sync_log(stack)
        validate_new_offsets(settings)
        yield stack
    finally:
        services.down(settings)


def _grant_event_id(stack: Stack, datanet: int) -> str:
    facts = log_views.read_view(stack.settings.kafka_bootstrap, topics.CHAIN_FACTS)
    (grant,) = [g for g in log_views.access_grants(facts) if g.datanet_id == datanet and g.revoked is None]
    return grant.granted["event_id"]


def test_payable_train_refuses_without_a_grant_trains_with_one_and_refuses_after_revoke(world: Stack):
    datanet = str(world.datanets["cli"])
    train = ("train", "--datanet", datanet, "--epochs", "1")
    refused = run(world.settings, *train, ok=False)
    assert "holds no grant" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    requested = json.loads(run(world.settings, "datanet", "request-access", "--datanet", datanet).stdout)
    assert (requested["event"], requested["builder"]) == ("AccessRequested", TRAINER.address.lower())
    granted = json.loads(run(world.settings, "datanet", "grant", "--datanet", datanet, TRAINER.address).stdout)
    assert granted["event"] == "AccessGranted"

    _sync_log(world)
    trained = json.loads(run(world.settings, *train).stdout)
    assert trained["trained"] is True
    record = AdapterRegistry(world.settings.adapters_dir).record(int(datanet), trained["adapter_id"])
    assert record.access_grant == _grant_event_id(world, int(datanet))
    assert record.access_grant.startswith(f"{world.chain.chain_id}:{granted['tx_hash']}:")

    run(world.settings, "datanet", "revoke", "--datanet", datanet, TRAINER.address)
    _sync_log(world)
    refused = run(world.settings, *train, ok=False)
    assert "grant was revoked" in refused.stderr and "Traceback" not in refused.stderr

    build_audit_db(world.settings)
    with duckdb.connect(str(world.settings.audit_db), read_only=True) as con:
        grants = con.execute("SELECT builder, requested_event_id IS NOT NULL, revoked_tx_hash, live FROM access_grants "
                             "WHERE datanet_id = ?", [int(datanet)]).fetchall()
        trainings = con.execute("SELECT grant_event_id, adapter_id FROM grant_trainings WHERE datanet_id = ?",
                                [int(datanet)]).fetchall()
        permissioned = con.execute("SELECT permissioned FROM datanets WHERE datanet_id = ?", [int(datanet)]).fetchone()
    assert grants == [(TRAINER.address.lower(), True, grants[0][2], False)] and grants[0][2].startswith("0x")
    assert trainings == [(record.access_grant, record.adapter_id)]
    assert permissioned == (True,)


def _materialize(stack: Stack, datanet: int, instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    return dg.materialize([lora_adapters], partition_key=partition_key(datanet), instance=instance,
                          resources=resources_for(stack.settings), raise_on_error=False)


def _failure(result: dg.ExecuteInJobResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.error.message


def test_lora_adapters_asset_fails_without_a_grant_materializes_with_one_and_fails_after_revoke(
        world: Stack, monkeypatch: pytest.MonkeyPatch):
    datanet = world.datanets["dagster"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(datanet_partitions.name, [partition_key(datanet)])
        result = _materialize(world, datanet, instance)
        assert not result.success and "holds no grant" in _failure(result)

        access.grant_access(world.chain, world.deployment, OWNER, datanet, TRAINER.address)
        result = _materialize(world, datanet, instance)
        assert not result.success, "a grant counts once it is on the log, not when it is sent"
        _sync_log(world)
        with monkeypatch.context() as env:
            env.setenv("PAYABLE_TRAINER_KEY", dev_account(8).key.hex())
            result = _materialize(world, datanet, instance)
            assert not result.success and dev_account(8).address.lower() in _failure(result), "another trainer"
        result = _materialize(world, datanet, instance)
        assert result.success
        adapter_id = result.asset_materializations_for_node("lora_adapters")[0].metadata["adapter_id"].value
        record = AdapterRegistry(world.settings.adapters_dir).record(datanet, adapter_id)
        assert record.access_grant == _grant_event_id(world, datanet)

        access.revoke_access(world.chain, world.deployment, OWNER, datanet, TRAINER.address)
        _sync_log(world)
        result = _materialize(world, datanet, instance)
        assert not result.success and "grant was revoked" in _failure(result)


def test_a_grant_that_a_reorg_removed_opens_nothing(stack, chain, deployment):
    datanet = create_datanet(chain, deployment, ContentStore(stack.content_dir), OWNER, DatanetSpec("notes"),
                             min_stake=10**18, max_contribution_size=1000, validators=[], permissioned=True)
    granted = access.grant_access(chain, deployment, OWNER, datanet, TRAINER.address)
    ingest_until_head(stack, deployment, FAST)  # depth 0: the grant is on the log before the reorg
    facts = log_views.read_view(stack.kafka_bootstrap, topics.CHAIN_FACTS)
    assert authorize(facts, datanet, TRAINER.address).startswith(f"{chain.chain_id}:{granted.tx_hash}:")

    # The grant's block is replaced by one holding the trainer's request instead (a reorg needs a new tx).
    registry = chain.contract("DatanetRegistry", deployment.registry)
    request = registry.functions.requestAccess(datanet).build_transaction({
        "from": TRAINER.address, "nonce": chain.w3.eth.get_transaction_count(TRAINER.address), "gas": 100_000,
        "chainId": chain.chain_id, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 1})
    rpc(stack, "anvil_reorg", [1, [["0x" + TRAINER.sign_transaction(request).raw_transaction.hex(), 0]]])
    report = ingest_until_head(stack, deployment, FAST)
    assert report.retracted == 1 and report.facts == {"AccessRequested": 1}
    facts = log_views.read_view(stack.kafka_bootstrap, topics.CHAIN_FACTS)
    with pytest.raises(AccessDenied, match="holds no grant"):
        authorize(facts, datanet, TRAINER.address)
    assert access_grant_rows(facts) == []
    access_rows = [(r["event_type"], r["retracted"]) for r in chain_event_rows(facts)
                   if r["event_type"].startswith("Access")]
    assert sorted(access_rows) == [("AccessGranted", True), ("AccessRequested", False)]
    assert not access.has_access(chain, deployment, datanet, TRAINER.address), "the chain agrees"


def test_authorize_reads_grants_in_chain_order_and_ignores_retracted_ones():
    """The rule itself on hand-made facts: a grant, a revoke, a re-grant that a reorg retracted."""
    def fact(event_id: str, block: int, **fields) -> dict:
        return {"event_id": event_id, "block_number": block, "log_index": 0, **fields}

    facts = log_views.LogView()
    facts.by_type["DatanetCreated"] += [fact("c", 1, datanet_id=1, owner="0xowner", permissioned=True),
                                        fact("p", 1, datanet_id=2, owner="0xowner", permissioned=False)]
    facts.by_type["AccessGranted"] += [fact("g1", 2, datanet_id=1, builder="0xAB"),
                                       fact("g2", 4, datanet_id=1, builder="0xab")]
    facts.by_type["AccessRevoked"] += [fact("r1", 3, datanet_id=1, builder="0xab")]
    assert authorize(facts, 2, "0xanyone") is None, "a public datanet needs no grant"
    assert authorize(facts, 1, "0xAb") == "g2"
    facts.by_type["FactRetracted"].append({"retracted_event_id": "g2"})
    with pytest.raises(AccessDenied, match="revoked"):
        authorize(facts, 1, "0xab")
    with pytest.raises(AccessDenied, match="not on the log"):
        authorize(facts, 3, "0xab")
    (grant,) = log_views.access_grants(facts)
    assert (grant.granted["event_id"], grant.revoked["event_id"]) == ("g1", "r1")
