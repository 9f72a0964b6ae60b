"""The reward cycle as the schedule and Dagster run it: close the epoch that is due, then emit it.

An epoch is due only when its inputs changed: if the newest closed epoch was decided from the same
influence, verdicts and slashes (same inputs digest), no new epoch is closed, and emitting the newest one
again only confirms it is fully on-chain (the emitter reconciles with the chain and sends nothing twice).
So re-running the graph with no new events creates no epoch and sends no transaction, and a cycle killed
half-way is finished by the next one.
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
    if closed and closed[newest]["inputs_digest"] == inputs.digest():
        return newest, None
    if not closed and inputs.influence.num_rows == 0:
        return 0, None
    return newest + 1, close_epoch(settings, newest + 1, inputs, pool=pool, rules=rules or SplitRules())
