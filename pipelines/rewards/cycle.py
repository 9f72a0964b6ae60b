"""The reward cycle as the schedule and Dagster run it: close the epoch that is due, then emit it.

Each influence run (a datanet's dataset version scored on its adapter by one method) is paid once, in the
first epoch that closes after it exists: an epoch is due only when the current influence includes a run no
closed epoch has paid. A datanet that keeps growing keeps being retrained, and each new model version pays
its pool among all the data that shaped it (old contributions included, by their influence on the new
model); nothing is paid twice for the same model. So re-running the graph with no new events closes no
epoch, and emitting the newest one again only confirms it is fully on-chain (the emitter reconciles with
the chain and sends nothing twice); a cycle killed half-way is finished by the next one.
"""

from __future__ import annotations

from payable.settings import Settings
from pipelines.rewards import outbox
from pipelines.rewards.epochs import EpochResult, close_epoch
from pipelines.rewards.inputs import load_inputs
from pipelines.rewards.split import SplitRules


def close_due_epoch(settings: Settings, *, pool: int,
                    rules: SplitRules | None = None) -> tuple[int, EpochResult | None]:
    """(newest epoch id, its result if it was closed now); (0, None) while there is nothing to pay yet."""
    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    inputs = load_inputs(settings)
    newest = max(closed, default=0)
    paid = {run for epoch in closed.values() for run in epoch["influence_runs"]}
    if set(inputs.influence_runs()) <= paid:
        return newest, None
    return newest + 1, close_epoch(settings, newest + 1, inputs, pool=pool, rules=rules or SplitRules())
