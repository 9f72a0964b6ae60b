"""The reward cycle as every caller runs it (CLI, Dagster, schedule): which epoch is due, close it, emit it.

The epoch that is due is, in this order:

1. the oldest epoch closed on the log but not finished on this distributor (no RewardEpochOnChain):
   a run killed half-way is finished by the next one, and no new epoch closes before it is;
2. else the next epoch, when some influence run is left for it to pay (``runs.payable_runs``: a run no
   closed epoch paid, with finite scores): a datanet that keeps growing keeps being retrained,
   and each new model version pays its pool among all the data that shaped it; or when some usage event
   is left to pay (``usage.payable_usage``: a served call no closed epoch paid, with everything behind it
   known), so served calls are paid by the same epochs, outbox and claims as training;
3. else nothing: re-running with no new events closes no epoch and sends no transaction.

That a run or a usage event is paid once is not decided here but in ``epochs.close_epoch``, below every
caller; this module only picks the epoch id, so an operator's explicit id that is not the due one is refused
(``EpochNotDue``) rather than closed out of turn. Nor does any caller choose the pool or the split rules: a
new epoch is closed by the governed parameters (``params.governed_params``) read from the chain at the
block it closes, and the epoch records them.
"""

from __future__ import annotations

from dataclasses import dataclass

from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.rewards import outbox
from pipelines.rewards.epochs import EpochResult, close_epoch, paid_runs
from pipelines.rewards.inputs import load_inputs
from pipelines.rewards.params import governed_params
from pipelines.rewards.runs import Exclusion, payable_runs
from pipelines.rewards.split import EpochInputs
from pipelines.rewards.usage import UsageExclusion, UsageInputs, load_usage, paid_usage, payable_usage
from schemas import rewards as schema


class EpochNotDue(ValueError):
    """An explicit epoch id is not the epoch that is due."""


@dataclass(frozen=True)
class Due:
    """The epoch a cycle works on now, or none."""

    epoch_id: int | None  # None: nothing is due
    resume: bool = False  # closed on the log already, not finished on-chain
    excluded: tuple[Exclusion, ...] = ()  # runs the next epoch leaves out, and why
    usage_excluded: tuple[UsageExclusion, ...] = ()  # usage events the next epoch leaves out, and why
    usage_due: int = 0  # usage events the next epoch pays

    def describe(self) -> str:
        if self.epoch_id is None:
            return "nothing is due: no influence run or usage event is left to pay"
        if self.resume:
            return f"epoch {self.epoch_id} is closed but not fully on-chain yet: it is resumed"
        return f"epoch {self.epoch_id} is due"


def unfinished_epoch(settings: Settings, deployment: Deployment,
                     closed: dict[int, dict] | None = None) -> int | None:
    """The oldest epoch closed on the log that the emitter has not finished on ``deployment``'s distributor."""
    closed = outbox.closed_epochs(settings.kafka_bootstrap) if closed is None else closed
    finished = outbox.epochs_on_chain(settings.kafka_bootstrap, deployment.chain_id, deployment.distributor)
    return min(set(closed) - finished, default=None)


def due_epoch(settings: Settings, deployment: Deployment, method: str | None = None) -> Due:
    """The epoch that is due (see the module docstring); sends nothing."""
    return _due(settings, deployment, method)[0]


def close_due_epoch(settings: Settings, deployment: Deployment, *, method: str | None = None,
                    epoch_id: int | None = None) -> tuple[Due, EpochResult | None]:
    """Closes the due epoch if it is a new one, by the governed parameters at the chain's head; (what is
    due, the close's result or None).

    ``method``: the influence method to pay on (needed when several are scored). ``epoch_id``, when given,
    must be the due epoch (``EpochNotDue`` otherwise)."""
    due, inputs, usage = _due(settings, deployment, method)
    if epoch_id is not None and epoch_id != due.epoch_id:
        raise EpochNotDue(f"epoch {epoch_id} is not due: {due.describe()}")
    if due.epoch_id is None or due.resume or inputs is None:
        return due, None
    governed = governed_params(Chain(settings.rpc_url), deployment)
    return due, close_epoch(settings, due.epoch_id, inputs, governed, method=method, usage=usage)


def _due(settings: Settings, deployment: Deployment,
         method: str | None) -> tuple[Due, EpochInputs | None, UsageInputs | None]:
    """What is due, and the inputs a new epoch would be closed from (None when resuming)."""
    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    unfinished = unfinished_epoch(settings, deployment, closed)
    if unfinished is not None:
        return Due(unfinished, resume=True), None, None
    next_id = max(closed, default=0) + 1
    inputs = load_inputs(settings)
    payable, excluded = payable_runs(inputs, paid_runs(closed, besides=next_id), method)
    committed = outbox.committed(settings.kafka_bootstrap, (schema.CONTRIBUTION_ALLOCATED, schema.USAGE_ALLOCATED))
    usage = load_usage(settings, deployment, closed, committed)
    priced, usage_excluded = payable_usage(usage, paid_usage(committed, besides=next_id))
    due = next_id if payable.influence.num_rows or priced else None
    return Due(due, excluded=excluded, usage_excluded=usage_excluded, usage_due=len(priced)), inputs, usage
