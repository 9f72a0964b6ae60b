"""Canaries are the planter's own fresh contributions: a reveal naming anyone else's contribution, or one the
planter submitted before the planting began, is refused with the reason, whether it comes through
``reveal`` or was written straight onto the log; on a real anvil + broker, with the chain facts ingested."""

from __future__ import annotations

import pytest

from payable.content_store import ContentStore
from payable.datanets import contribute
from pipelines.attribution import canaries
from pipelines.ingest.ingester import ingest_until_head
from schemas import canaries as schema
from tests.test_commitments import TRAINER, science_datanet


def test_only_contributions_the_planter_submitted_for_the_commitment_can_be_revealed(stack, tmp_path):
    chain, deployment, datanet, rows = science_datanet(stack, tmp_path, also_funded=(TRAINER,))
    older = tmp_path / "older.txt"
    older.write_text("an honest note the operator's key submitted before it planted anything, in plain words.")
    (own_old,) = contribute(chain, deployment, ContentStore(stack.content_dir), TRAINER, datanet, [older])
    planted = canaries.plant(stack, datanet, 2, TRAINER, seed=5)
    salt, ids = canaries.read_secret(stack.data_dir, datanet, planted.commitment)
    with pytest.raises(canaries.CanaryError, match="has no ContributionSubmitted fact on the log"):
        canaries.reveal(stack.kafka_bootstrap, datanet, salt, ids)  # not ingested yet: nothing shows who sent it

    chain.mine(stack.confirmations + 1)
    ingest_until_head(stack, deployment)
    record = canaries.for_datanet(stack.kafka_bootstrap, datanet).records[planted.commitment]
    window = (record["from_block"], record["block"])
    assert record["planter"] == TRAINER.address.lower() and window[0] < window[1]

    honest = [rows[0]["contribution_id"], rows[4]["contribution_id"]]
    named = canaries.commit(stack.kafka_bootstrap, stack.data_dir, datanet, honest, TRAINER.address, window,
                            salt="0x" + "01" * 32)
    with pytest.raises(canaries.CanaryError, match=f"submitted by {rows[0]['contributor'].lower()}, not the "
                                                   f"planting account {TRAINER.address.lower()}"):
        canaries.reveal(stack.kafka_bootstrap, datanet, "0x" + "01" * 32, honest)
    stale = canaries.commit(stack.kafka_bootstrap, stack.data_dir, datanet, [own_old.contribution_id, *ids],
                            TRAINER.address, window, salt="0x" + "02" * 32)
    with pytest.raises(canaries.CanaryError, match=f"contribution {own_old.contribution_id} was submitted at block "
                                                   r"\d+, outside the planting window"):
        canaries.reveal(stack.kafka_bootstrap, datanet, "0x" + "02" * 32, [own_old.contribution_id, *ids])

    forged = {"event_id": "0x" + "ff" * 32, "datanet_id": datanet, "commitment": named, "salt": "0x" + "01" * 32,
              "contribution_ids": honest}
    canaries._append(stack.kafka_bootstrap, schema.CANARIES_REVEALED, forged)  # around reveal's check
    assert canaries.reveal(stack.kafka_bootstrap, datanet, salt, ids) == (planted.commitment, tuple(ids))
    state = canaries.for_datanet(stack.kafka_bootstrap, datanet)
    assert state.revealed == {planted.commitment: tuple(ids)}, "only the planter's fresh plants are canaries"
    assert "not the planting account" in state.refused[named] and stale in state.pending
    assert canaries.payout_exclusions(stack.kafka_bootstrap, refuse_pending=False) == frozenset(ids), \
        "an honest contribution named a canary is still paid"


def test_a_commitment_that_recorded_no_planter_cannot_be_revealed():
    committed = {"commitment": "0x" + "ab" * 32, "datanet_id": 1, "count": 1}  # a v1 CanariesCommitted record
    assert "recorded no planting account" in canaries.planting_refusal(committed, [1], {1: {}})
