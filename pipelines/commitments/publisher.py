"""Publishing commitments on-chain exactly once, with the rewards emitter's outbox discipline.

For each commitment, in order (a model before the runs scored on it, which the contract requires):
1. its record goes on the commitments topic (once; a different record under the same id is a
   ``CommitmentConflict``: the adapter or the scores changed after they were committed);
2. a ``txsteps.Step`` publishes it: done when the registry already holds the record's hash; otherwise the
   intent (signed bytes) is on the log before the transaction is sent, and a restart reconciles the intent
   with the chain (``txsteps.TxRunner``). A different hash on-chain is a conflict, never overwritten (the
   contract refuses a second publish anyway).
Kill it anywhere (``PAYABLE_REWARDS_CRASH_AT=model:after_intent``, ``influence:after_send``, ...) and rerun:
each commitment is published once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

import contracts
from payable.chain import Chain, Deployment
from payable.errors import PayableError
from payable.keys import Role, load_account
from payable.settings import Settings
from pipelines.commitments import log, sources
from pipelines.commitments.records import InfluenceCommitment, ModelCommitment, commitment_id, hexed
from pipelines.rewards import outbox
from pipelines.rewards.txsteps import Step, StepOutcome, TxRunner, TxScope
from schemas import commitments as schema

Commitment = ModelCommitment | InfluenceCommitment


class CommitmentConflict(PayableError, RuntimeError):
    """A commitment id already holds a different record (on the log or on-chain)."""


@dataclass(frozen=True)
class CommitResult:
    commitments: tuple[Commitment, ...]
    steps: tuple[StepOutcome, ...]
    waiting: tuple[str, ...] = ()
    """Influence runs not committed yet: their canaries are unrevealed (``sources.awaits_canary_reveal``)."""

    @property
    def ok(self) -> bool:
        return all(step.state == "done" for step in self.steps)


def commit_all(settings: Settings, deployment: Deployment, datanet_ids: list[int] | None = None,
               signer: LocalAccount | None = None) -> CommitResult:
    """Commits every registered adapter of the datanets and every influence run scored on them; safe to rerun.

    A commitment already recorded on the log is taken from there, not recomputed: what was committed stays
    committed (a projection that changed since is for ``verify`` to find), and a rerun reads no trees. A run
    whose canaries are not revealed yet waits (``CommitResult.waiting``): the next call after the reveal
    commits it with its AUC.
    """
    history = log.read_log(settings.kafka_bootstrap)

    def logged(name: str) -> dict | None:
        return log.recorded(history.get(hexed(commitment_id(name)), []))

    models = [ModelCommitment.from_record(r) if (r := logged(record.adapter_id)) else
              sources.model_commitment(settings, record) for record in sources.adapters(settings, datanet_ids)]
    table = sources.influence_table(settings)
    names = sources.runs_of(table, {m.adapter_id for m in models})
    waiting = tuple(run for run in names
                    if not logged(run) and sources.awaits_canary_reveal(sources.run_rows(table, run)))
    runs = [InfluenceCommitment.from_record(r) if (r := logged(run)) else
            sources.influence_commitment(sources.run_rows(table, run), run)
            for run in names if run not in waiting]
    return dataclasses.replace(publish(settings, deployment, [*models, *runs], signer), waiting=waiting)


def publish(settings: Settings, deployment: Deployment, commitments: Sequence[Commitment],
            signer: LocalAccount | None = None) -> CommitResult:
    """Records and publishes ``commitments`` in order; stops at the first one that does not get on-chain."""
    if not deployment.attribution:
        raise CommitmentConflict("this deployment has no AttributionRegistry: redeploy with `payable deploy`")
    signer = signer or load_account(Role.TRAINER, local_chain=settings.local_chain)
    chain = Chain(settings.rpc_url)
    registry = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
    history = log.read_log(settings.kafka_bootstrap)
    writer = log.writer(settings.kafka_bootstrap)
    outcomes = []
    try:
        for commitment in commitments:
            entries = history.get(commitment.commitment_id, [])
            _record(writer, entries, commitment)
            scope = TxScope(schema.COMMITMENT_TX_STATE,
                            {"registry": deployment.attribution.lower(), "commitment_id": commitment.commitment_id})
            outcomes.append(TxRunner(chain, writer, scope, entries).run(_step(registry, commitment, signer)))
            if outcomes[-1].state != "done":
                break
    finally:
        writer.close()
    return CommitResult(tuple(commitments), tuple(outcomes))


def _record(writer: outbox.OutboxWriter, entries: list[outbox.Entry], commitment: Commitment) -> None:
    record = commitment.to_record()
    previous = log.recorded(entries)
    if previous is not None:
        if previous["record_hash"] != record["record_hash"]:
            raise CommitmentConflict(f"{_what(commitment)} was recorded as {previous['record_hash']}; "
                                     f"it now gives {record['record_hash']}")
        return
    event_type = (schema.MODEL_COMMITMENT_RECORDED if isinstance(commitment, ModelCommitment)
                  else schema.INFLUENCE_COMMITMENT_RECORDED)
    record["event_id"] = outbox.derived_id(event_type.name, record["commitment_id"], record["record_hash"])
    writer.append(event_type, [record])
    entries.append(outbox.Entry(-1, event_type.name, record))


def _step(registry, commitment: Commitment, signer: LocalAccount) -> Step:
    is_model = isinstance(commitment, ModelCommitment)
    stored = registry.functions.modelRecord if is_model else registry.functions.influenceRecord
    commit = registry.functions.commitModel if is_model else registry.functions.commitInfluence
    ours = commitment.record_hash()

    def check() -> str | None:
        onchain = "0x" + stored(commitment.args()[0]).call().hex()
        if onchain == ours:
            return "record on-chain"
        if int(onchain, 16):
            raise CommitmentConflict(f"{_what(commitment)} is committed on-chain as {onchain}, ours is {ours}")
        return None

    kind = "model" if is_model else "influence"
    return Step(f"{kind}-{commitment.commitment_id[2:14]}", signer, check, lambda: commit(*commitment.args()))


def _what(commitment: Commitment) -> str:
    return (f"adapter {commitment.adapter_id}" if isinstance(commitment, ModelCommitment)
            else f"influence run {commitment.run}")
