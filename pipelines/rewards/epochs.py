"""Closing a reward epoch: which runs it pays, split, Merkle root, the decision on the log, the epoch's files.

The log is the truth (invariant 1): ``close_epoch`` writes every allocation (per account and per
contribution) and slash request to the rewards outbox and then a RewardEpochClosed marker carrying the
root and the influence runs it paid; the files under the data directory are a projection that
``load_epoch`` rebuilds from the log when they are missing.

The pool and the split rules are the governed parameters it is given (``params.GovernedParams``, read from
the chain by the cycle), recorded in the marker with the block they were read at.

Exactly once (invariant 4) is decided here, below every caller: an epoch pays only the influence runs no
other closed epoch paid (``runs.payable_runs``, which also leaves out runs with non-finite scores), so a
script, the CLI or Dagster closing "the next epoch" on unchanged inputs gets ``NothingToPay`` rather
than paying the same runs again. Epochs close in order (the previous epoch's remainder carries over). An
epoch id closes once: closing it again with inputs that give the same root is a no-op, with other
inputs an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from payable.settings import Settings
from pipelines.rewards import outbox, store
from pipelines.rewards.merkle import build_tree
from pipelines.rewards.params import GovernedParams
from pipelines.rewards.runs import Exclusion, payable_runs
from pipelines.rewards.split import EpochInputs, EpochParams, SlashRequest, SplitRules, split_rewards
from schemas import rewards as schema


class EpochConflict(RuntimeError):
    """An epoch id was already closed (or published) with a different root."""


class EpochNotClosed(LookupError):
    """The outbox has no RewardEpochClosed event for an epoch."""


class NothingToPay(LookupError):
    """No influence run is left for a new epoch to pay: each one is paid already or cannot be paid."""

    def __init__(self, epoch_id: int, excluded: tuple[Exclusion, ...]):
        self.epoch_id, self.excluded = epoch_id, excluded
        why = "; ".join(f"{x.run}: {x.reason}" for x in excluded) or "no influence scores yet"
        super().__init__(f"epoch {epoch_id} has nothing to pay ({why})")


@dataclass(frozen=True)
class EpochResult:
    epoch_id: int
    merkle_root: str
    total: int
    pool: int  # the governed pool it was closed with
    carry_out: int
    accounts: int
    slash_requests: int
    directory: Path
    already_closed: bool
    excluded: tuple[Exclusion, ...] = ()  # influence runs of the inputs this epoch does not pay, with why


def epoch_dir(settings: Settings, epoch_id: int) -> Path:
    return settings.data_dir / "rewards" / f"epoch-{epoch_id}"


def next_epoch_id(settings: Settings) -> int:
    """One past the highest epoch closed on the log (1 for the first)."""
    return max(outbox.closed_epochs(settings.kafka_bootstrap), default=0) + 1


def paid_runs(closed: dict[int, dict], *, besides: int) -> dict[str, int]:
    """influence run -> the closed epoch (other than ``besides``) that paid it, the first if several did."""
    return {run: epoch_id for epoch_id, record in sorted(closed.items(), reverse=True) if epoch_id != besides
            for run in record["influence_runs"]}


def close_epoch(settings: Settings, epoch_id: int, inputs: EpochInputs, governed: GovernedParams, *,
                method: str | None = None) -> EpochResult:
    """Decides epoch ``epoch_id`` from the runs of ``inputs`` no other epoch paid, by the ``governed`` pool and
    rules (``method``: the influence method to pay on), and records it on the log and under the data
    directory; raises ``NothingToPay`` rather than close an epoch that pays no run."""
    rules = governed.split_rules(method)
    pool = governed.epoch_pool
    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    inputs, excluded = payable_runs(inputs, paid_runs(closed, besides=epoch_id), rules.method)
    params = EpochParams(epoch_id, pool, _carry_in(closed, epoch_id), rules)
    if epoch_id not in closed and inputs.influence.num_rows == 0:
        raise NothingToPay(epoch_id, excluded)
    split = split_rewards(inputs, params)
    tree = build_tree(split.accounts, split.amounts) if split.accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, pool, params.carry_in,
                              split.carry_out, split.accounts, split.amounts, split.slash_requests, tree)
    directory = epoch_dir(settings, epoch_id)
    if epoch_id in closed:
        previous = closed[epoch_id]
        if previous["merkle_root"] != "0x" + epoch.root.hex() or int(previous["total"]) != epoch.total:
            raise EpochConflict(f"epoch {epoch_id} was closed with root {previous['merkle_root']}; "
                                f"these inputs give 0x{epoch.root.hex()}")
        if not store.exists(directory):
            store.save(directory, epoch, split.allocations)
        return _result(epoch, directory, excluded, already_closed=True)

    _write_decision(settings, epoch, split.allocations, inputs, rules, governed)
    store.save(directory, epoch, split.allocations)
    return _result(epoch, directory, excluded, already_closed=False)


def _carry_in(closed: dict[int, dict], epoch_id: int) -> int:
    """The previous epoch's remainder, from its RewardEpochClosed event; epochs close in order, so no
    remainder can be skipped."""
    if epoch_id < 1:
        raise ValueError("epoch ids start at 1")
    if epoch_id == 1:
        return 0
    if epoch_id - 1 not in closed:
        raise EpochNotClosed(f"close epoch {epoch_id - 1} before epoch {epoch_id}: its remainder carries over")
    return int(closed[epoch_id - 1]["carry_out"])


def load_epoch(settings: Settings, epoch_id: int) -> store.ClosedEpoch:
    """The closed epoch from its files, rebuilt from the log first when they are missing."""
    directory = epoch_dir(settings, epoch_id)
    if not store.exists(directory):
        replay_epoch(settings, epoch_id)
    return store.load(directory)


def replay_epoch(settings: Settings, epoch_id: int) -> store.ClosedEpoch:
    """Rebuilds the epoch's files from the outbox log alone; fails if the root does not come out the same."""
    entries = outbox.read_epoch(settings.kafka_bootstrap, epoch_id)
    marker = _closed_entry(entries)
    if marker is None:
        raise EpochNotClosed(f"epoch {epoch_id} is not closed on the log")
    closed = marker.record
    window = [e for e in entries if closed["first_offset"] <= e.offset < marker.offset]
    allocated = {e.record["account"]: int(e.record["amount"]) for e in window
                 if e.type == schema.REWARD_ALLOCATED.name}
    contributions = [{name: e.record[name] for name in schema.ALLOCATION.names} for e in window
                     if e.type == schema.CONTRIBUTION_ALLOCATED.name]
    slashes = {e.record["contribution_id"]: SlashRequest.from_record(e.record)
               for e in window if e.type == schema.SLASH_REQUESTED.name}
    accounts = tuple(sorted(allocated))
    amounts = tuple(allocated[a] for a in accounts)
    tree = build_tree(accounts, amounts) if accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, int(closed["pool"]),
                              int(closed["carry_in"]), int(closed["carry_out"]), accounts, amounts,
                              tuple(slashes[c] for c in sorted(slashes)), tree)
    if "0x" + epoch.root.hex() != closed["merkle_root"] or len(accounts) != closed["accounts"]:
        raise EpochConflict(f"replaying epoch {epoch_id} gives root 0x{epoch.root.hex()}, "
                            f"the log recorded {closed['merkle_root']}")
    allocations = pa.Table.from_pylist(contributions, schema=schema.ALLOCATION) if contributions else None
    store.save(epoch_dir(settings, epoch_id), epoch, allocations)
    return epoch


def _closed_entry(entries: list[outbox.Entry]) -> outbox.Entry | None:
    closed = [e for e in entries if e.type == schema.REWARD_EPOCH_CLOSED.name]
    return closed[-1] if closed else None


def _write_decision(settings: Settings, epoch: store.ClosedEpoch, allocations: pa.Table, inputs: EpochInputs,
                    rules: SplitRules, governed: GovernedParams) -> None:
    """Allocations and slash requests first, then the closing marker that names where they start."""
    n = epoch.epoch_id
    writer = outbox.OutboxWriter(settings.kafka_bootstrap)  # creates the topic on first use
    try:
        first_offset = outbox.end_offset(settings.kafka_bootstrap, n)
        writer.append(schema.REWARD_ALLOCATED, [
            {"event_id": outbox.derived_id("allocated", n, a, str(x)), "epoch_id": n, "account": a, "amount": str(x)}
            for a, x in zip(epoch.accounts, epoch.amounts, strict=True)])
        writer.append(schema.CONTRIBUTION_ALLOCATED, [
            {"event_id": outbox.derived_id("contribution-allocated", n, row["contribution_id"]), "epoch_id": n, **row}
            for row in allocations.to_pylist()])
        writer.append(schema.SLASH_REQUESTED, [
            {"event_id": outbox.derived_id("slash-requested", n, r.contribution_id, r.reason_code), "epoch_id": n,
             **r.record()} for r in epoch.slash_requests])
        root = "0x" + epoch.root.hex()
        writer.append(schema.REWARD_EPOCH_CLOSED, [{
            "event_id": outbox.derived_id("closed", n, root, inputs.digest()), "epoch_id": n, "merkle_root": root,
            "total": str(epoch.total), "pool": str(epoch.pool), "carry_in": str(epoch.carry_in),
            "carry_out": str(epoch.carry_out), "accounts": len(epoch.accounts),
            "slash_requests": len(epoch.slash_requests), "first_offset": first_offset,
            "inputs_digest": inputs.digest(), "rules": rules.to_json(), "influence_runs": inputs.influence_runs(),
            "params": governed.to_json(), "params_block": governed.block,
        }])
    finally:
        writer.close()


def _result(epoch: store.ClosedEpoch, directory: Path, excluded: tuple[Exclusion, ...], *,
            already_closed: bool) -> EpochResult:
    return EpochResult(epoch.epoch_id, "0x" + epoch.root.hex(), epoch.total, epoch.pool, epoch.carry_out,
                       len(epoch.accounts), len(epoch.slash_requests), directory, already_closed, excluded)
