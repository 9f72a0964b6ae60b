"""Reconciliation on what the real ingester wrote: the chain read as deep as the facts, and double payments
(a run paid by two epochs, an epoch funded twice) and a standing deep-reorg alert named."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

import contracts
from payable import kafka_log
from pipelines.audit.reconcile import reconcile
from pipelines.ingest import DeepReorg, ingest_until_head
from pipelines.rewards import outbox
from pipelines.rewards.cycle import close_due_epoch
from pipelines.rewards.emitter import emit_epoch
from pipelines.rewards.inputs import INFLUENCE_TABLE
from schemas import influence, topics
from schemas import rewards as schema
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.test_ingest_support import CONTRIBUTOR, DEPLOYER, FAST, contribute, open_datanet, rpc, signed_contribute
from tests.test_rewards_inputs import verdict

WINDOW = replace(FAST, reorg_window=2)  # depth 0, and a reorg window a test can reach past


def paid_epoch(stack, chain, deployment) -> int:
    """Three real contributions, their verdicts and scores, epoch 1 closed and pushed on-chain, ingested back."""
    datanet = open_datanet(chain, deployment, 4)
    contribute(stack, deployment, datanet, range(3))
    who = CONTRIBUTOR.address.lower()
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    producer = kafka_log.make_producer(stack.kafka_bootstrap)
    kafka_log.produce(producer, CONTRIBUTION_VERDICT, [{**verdict(c, who, "accepted"), "datanet_id": datanet}
                                                       for c in (1, 2, 3)], key=lambda r: topics.datanet_key(datanet))
    producer.flush()
    producer.close()
    import lance  # here, not at collection: lance's threads make later forks unsafe

    lance.write_dataset(pa.Table.from_pylist([  # every column the attribution stage writes
        {"contribution_id": c, "contributor": who, "datanet_id": datanet, "dataset_version": 1, "adapter_id": "a",
         "method": "tracin", "content_hash": f"0x{c:064x}", "score": float(c), "rank": c, "copies": 1,
         "trained": True, "harmful": False, "helped_queries": [], "hurt_queries": [], "score_low": float(c),
         "score_high": float(c), "checkpoint_scores": [float(c)], "robust_z": 0.0} for c in (1, 2, 3)],
        schema=influence.INFLUENCE), str(stack.lance_dir / INFLUENCE_TABLE))
    due, _ = close_due_epoch(stack, deployment)
    assert due.epoch_id == 1 and emit_epoch(stack, deployment, 1).ok
    ingest_until_head(stack, deployment, WINDOW)
    return datanet


def test_reconcile_reads_the_chain_as_deep_as_ingest_did_and_names_a_standing_deep_reorg(stack, chain, deployment):
    datanet = paid_epoch(stack, chain, deployment)
    assert reconcile(stack, deployment) == []
    # Ingested at depth 0; reconciling under PAYABLE_CONFIRMATIONS=12 must not call the last blocks missing.
    assert reconcile(replace(stack, confirmations=12), deployment) == []

    rpc(stack, "anvil_mine", [hex(5)])  # empty blocks, so the reorg below changes no reward
    ingest_until_head(stack, deployment, WINDOW)
    nonce = chain.w3.eth.get_transaction_count(CONTRIBUTOR.address)
    rpc(stack, "anvil_reorg", [4, [[signed_contribute(deployment, datanet, 50, nonce), 0]]])
    try:
        ingest_until_head(stack, deployment, WINDOW)
    except DeepReorg:
        pass
    else:
        raise AssertionError("the reorg was meant to reach past the ingester's window")
    (difference,) = reconcile(stack, deployment)
    assert difference.table == "alerts" and "reorg-beyond-window" in difference.key
    assert "reorganised below block" in str(difference)


def test_reconcile_names_a_run_paid_by_two_epochs_and_an_epoch_funded_twice(stack, chain, deployment):
    paid_epoch(stack, chain, deployment)
    closed = outbox.closed_epochs(stack.kafka_bootstrap)[1]
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    receipt = chain.transact(DEPLOYER, token.functions.transfer(deployment.distributor, 5), label="second funding")
    extra = "0x" + receipt["transactionHash"].hex().removeprefix("0x")
    ingest_until_head(stack, deployment, WINDOW)
    # What `payable reward` wrote before runs were paid once: epoch 2 closed on epoch 1's run, and the
    # emitter's record of a second confirmed funding of epoch 1.
    writer = outbox.OutboxWriter(stack.kafka_bootstrap)
    writer.append(schema.REWARD_EPOCH_CLOSED, [{
        **closed, "event_id": outbox.derived_id("closed", 2), "epoch_id": 2, "accounts": 0, "total": "0",
        "merkle_root": "0x" + "00" * 32, "carry_in": closed["carry_out"],
        "first_offset": outbox.end_offset(stack.kafka_bootstrap, 2)}])
    writer.append(schema.REWARD_TX_STATE, [{
        "event_id": outbox.derived_id("tx-state", "again"), "epoch_id": 1, "chain_id": chain.chain_id,
        "distributor": deployment.distributor.lower(), "step": "fund", "state": "confirmed",
        "sender": DEPLOYER.address.lower(), "nonce": None, "tx_hash": extra, "raw_tx": None,
        "block_number": None, "detail": ""}])
    writer.close()

    differences = reconcile(stack, deployment)
    (run,) = [d for d in differences if d.check == "influence run paid by one epoch"]
    assert run.key == f"run={closed['influence_runs'][0]}" and run.found == "epochs 1, 2"
    (funded,) = [d for d in differences if d.check == "distributor funded once per epoch"]
    assert funded.key == "epoch_id=1" and extra in funded.found
