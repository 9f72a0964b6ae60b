"""Closing a reward epoch: split, Merkle root, the decision on the log, the epoch's files.

The log is the truth (invariant 1): ``close_epoch`` writes every allocation and slash request to the
rewards outbox and then a RewardEpochClosed marker carrying the root; the files under the data directory
are a projection that ``load_epoch`` rebuilds from the log when they are missing. An epoch id closes once:
closing it again with inputs that give the same root is a no-op, with other inputs an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from payable.settings import Settings
from pipelines.rewards import outbox, store
from pipelines.rewards.merkle import build_tree
from pipelines.rewards.split import EpochInputs, EpochParams, SlashRequest, SplitRules, split_rewards
from schemas import rewards as schema


class EpochConflict(RuntimeError):
    """An epoch id was already closed (or published) with a different root."""


class EpochNotClosed(LookupError):
    """The outbox has no RewardEpochClosed event for an epoch."""


@dataclass(frozen=True)
class EpochResult:
    epoch_id: int
    merkle_root: str
    total: int
    carry_out: int
    accounts: int
    slash_requests: int
    directory: Path
    already_closed: bool


def epoch_dir(settings: Settings, epoch_id: int) -> Path:
    return settings.data_dir / "rewards" / f"epoch-{epoch_id}"


def next_epoch_id(settings: Settings) -> int:
    """One past the highest epoch closed on the log (1 for the first)."""
    return max(outbox.closed_epochs(settings.kafka_bootstrap), default=0) + 1


def carry_in(settings: Settings, epoch_id: int) -> int:
    """The previous epoch's remainder, from its RewardEpochClosed event; epochs close in order, so no
    remainder can be skipped."""
    if epoch_id < 1:
        raise ValueError("epoch ids start at 1")
    if epoch_id == 1:
        return 0
    previous = _closed_entry(outbox.read_epoch(settings.kafka_bootstrap, epoch_id - 1))
    if previous is None:
        raise EpochNotClosed(f"close epoch {epoch_id - 1} before epoch {epoch_id}: its remainder carries over")
    return int(previous.record["carry_out"])


def close_epoch(settings: Settings, epoch_id: int, inputs: EpochInputs, *, pool: int,
                rules: SplitRules | None = None) -> EpochResult:
    """Decides epoch ``epoch_id`` from ``inputs`` and records it on the log and under the data directory."""
    rules = rules or SplitRules()
    params = EpochParams(epoch_id, pool, carry_in(settings, epoch_id), rules)
    split = split_rewards(inputs, params)
    tree = build_tree(split.accounts, split.amounts) if split.accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, pool, params.carry_in,
                              split.carry_out, split.accounts, split.amounts, split.slash_requests, tree)
    directory = epoch_dir(settings, epoch_id)
    closed = _closed_entry(outbox.read_epoch(settings.kafka_bootstrap, epoch_id))
    if closed is not None:
        previous = closed.record
        if previous["merkle_root"] != "0x" + epoch.root.hex() or int(previous["total"]) != epoch.total:
            raise EpochConflict(f"epoch {epoch_id} was closed with root {previous['merkle_root']}; "
                                f"these inputs give 0x{epoch.root.hex()}")
        if not store.exists(directory):
            store.save(directory, epoch, split.allocations)
        return _result(epoch, directory, already_closed=True)

    _write_decision(settings, epoch, inputs, rules)
    store.save(directory, epoch, split.allocations)
    return _result(epoch, directory, already_closed=False)


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
    slashes = {e.record["contribution_id"]: SlashRequest(
        e.record["contribution_id"], e.record["datanet_id"], e.record["contributor"], e.record["reason_code"],
        e.record["reason"]) for e in window if e.type == schema.SLASH_REQUESTED.name}
    accounts = tuple(sorted(allocated))
    amounts = tuple(allocated[a] for a in accounts)
    tree = build_tree(accounts, amounts) if accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, int(closed["pool"]),
                              int(closed["carry_in"]), int(closed["carry_out"]), accounts, amounts,
                              tuple(slashes[c] for c in sorted(slashes)), tree)
    if "0x" + epoch.root.hex() != closed["merkle_root"] or len(accounts) != closed["accounts"]:
        raise EpochConflict(f"replaying epoch {epoch_id} gives root 0x{epoch.root.hex()}, "
                            f"the log recorded {closed['merkle_root']}")
    store.save(epoch_dir(settings, epoch_id), epoch)
    return epoch


def _closed_entry(entries: list[outbox.Entry]) -> outbox.Entry | None:
    closed = [e for e in entries if e.type == schema.REWARD_EPOCH_CLOSED.name]
    return closed[-1] if closed else None


def _write_decision(settings: Settings, epoch: store.ClosedEpoch, inputs: EpochInputs, rules: SplitRules) -> None:
    """Allocations and slash requests first, then the closing marker that names where they start."""
    n = epoch.epoch_id
    writer = outbox.OutboxWriter(settings.kafka_bootstrap)  # creates the topic on first use
    try:
        first_offset = outbox.end_offset(settings.kafka_bootstrap, n)
        writer.append(schema.REWARD_ALLOCATED, [
            {"event_id": outbox.derived_id("allocated", n, a, str(x)), "epoch_id": n, "account": a, "amount": str(x)}
            for a, x in zip(epoch.accounts, epoch.amounts, strict=True)])
        writer.append(schema.SLASH_REQUESTED, [
            {"event_id": outbox.derived_id("slash-requested", n, r.contribution_id, r.reason_code), "epoch_id": n,
             "contribution_id": r.contribution_id, "datanet_id": r.datanet_id, "contributor": r.contributor,
             "reason_code": int(r.reason_code), "reason": r.reason} for r in epoch.slash_requests])
        root = "0x" + epoch.root.hex()
        writer.append(schema.REWARD_EPOCH_CLOSED, [{
            "event_id": outbox.derived_id("closed", n, root, inputs.digest()), "epoch_id": n, "merkle_root": root,
            "total": str(epoch.total), "pool": str(epoch.pool), "carry_in": str(epoch.carry_in),
            "carry_out": str(epoch.carry_out), "accounts": len(epoch.accounts),
            "slash_requests": len(epoch.slash_requests), "first_offset": first_offset,
            "inputs_digest": inputs.digest(), "rules": rules.to_json(), "influence_runs": inputs.influence_runs(),
        }])
    finally:
        writer.close()


def _result(epoch: store.ClosedEpoch, directory: Path, *, already_closed: bool) -> EpochResult:
    return EpochResult(epoch.epoch_id, "0x" + epoch.root.hex(), epoch.total, epoch.carry_out, len(epoch.accounts),
                       len(epoch.slash_requests), directory, already_closed)
