"""Which influence runs an epoch may pay: the rule every epoch close goes through.

An influence run is one datanet's dataset version scored on one adapter by one method, named
``"<datanet>:<dataset_version>:<adapter_id>:<method>"``. Invariant 4 asks that a run be paid in exactly
one epoch, whoever closes it (CLI, Dagster, a script with an explicit epoch id), so ``payable_runs``
takes out of an epoch's inputs, with the reason for each:

- runs another closed epoch already paid (``paid in epoch <n>``);
- runs with a non-finite score (NaN or infinite): such a run cannot be split fairly, so it is not
  paid, and it does not stop the other datanets' runs from being paid. It stays unpaid, so the epoch
  after its scores are fixed pays it;
- runs of another method than the one the rules pay on.

What is left is what the epoch pays; when nothing is left, no epoch is due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipelines.rewards.merkle import keccak

if TYPE_CHECKING:  # split imports this module for the run names
    from pipelines.rewards.split import EpochInputs

RUN_COLUMNS = ("datanet_id", "dataset_version", "adapter_id", "method")


@dataclass(frozen=True)
class Exclusion:
    """An influence run left out of an epoch, and why."""

    run: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"excluded_run": self.run, "reason": self.reason}


def run_names(influence: pa.Table) -> list[str]:
    """The run of each row of an ``INFLUENCE`` table, in row order."""
    columns = [influence[c].to_pylist() for c in RUN_COLUMNS]
    return [":".join(map(str, run)) for run in zip(*columns, strict=True)]


def run_ids(runs: list[str]) -> list[bytes]:
    """The on-chain ids of runs (keccak256 of each name, as the AttributionRegistry keys them), ascending."""
    return sorted(keccak(run.encode()) for run in runs)


def runs_root(runs: list[str]) -> bytes:
    """keccak256 of the runs' ids concatenated ascending: what ``AttributionRegistry.epochRuns`` holds."""
    return keccak(b"".join(run_ids(runs)))


def payable_runs(inputs: EpochInputs, paid: Mapping[str, int],
                 method: str | None = None) -> tuple[EpochInputs, tuple[Exclusion, ...]]:
    """``inputs`` restricted to the runs an epoch may pay (see the module docstring); ``paid`` maps each run
    some other closed epoch paid to that epoch's id."""
    names = run_names(inputs.influence)
    finite = np.isfinite(inputs.influence.column("score").to_numpy(zero_copy_only=False))
    nonfinite = {name for name, ok in zip(names, finite.tolist(), strict=True) if not ok}
    reasons: dict[str, str] = {}
    for run, row_method in sorted(set(zip(names, inputs.influence.column("method").to_pylist(), strict=True))):
        if run in paid:
            reasons[run] = f"paid in epoch {paid[run]}"
        elif method is not None and row_method != method:
            reasons[run] = f"scored by {row_method}, the epoch pays on {method}"
        elif run in nonfinite:
            reasons[run] = "non-finite influence scores (NaN or infinite)"
    if not reasons:
        return inputs, ()
    keep = pa.array([name not in reasons for name in names], type=pa.bool_())
    influence = inputs.influence.filter(keep)
    scored = set(influence.column("contribution_id").to_pylist())
    kept = dataclasses.replace(inputs, influence=influence,
                               harmful={c: e for c, e in inputs.harmful.items() if c in scored})
    return kept, tuple(Exclusion(run, reason) for run, reason in sorted(reasons.items()))

