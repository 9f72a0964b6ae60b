"""Closing a reward epoch: which runs it pays, split, Merkle root, the decision on the log, the epoch's files.

The log is the truth (invariant 1): ``close_epoch`` writes every allocation (per account and per
contribution) and slash request to the rewards outbox and then a RewardEpochClosed marker carrying the
root and the influence runs it paid; the files under the data directory are a projection that
``load_epoch`` rebuilds from the log when they are missing.

The pool and the split rules are the governed parameters it is given (``params.GovernedParams``, read from
the chain by the cycle), recorded in the marker with the block they were read at; so are the usage terms.

Exactly once (invariants 4 and 8) is decided here, below every caller: an epoch pays only the influence runs
no other closed epoch paid (``runs.payable_runs``, which also leaves out runs with non-finite scores) and the
usage events no other closed epoch paid (``usage.payable_usage``), so a script, the CLI or Dagster closing
"the next epoch" on unchanged inputs gets ``NothingToPay`` rather than paying the same runs or calls again.
An epoch that pays usage only allots no new pool (the training pool is for new models). One Merkle tree
holds each account's training payout plus its usage earnings; the usage lines (``UsageAllocated``) and the
batch's root over the paid event ids go on the log with the epoch.

Epochs close in order (the previous epoch's remainder carries over). An
epoch id closes once: closing it again with inputs that give the same root is a no-op, with other
inputs an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from payable.settings import Settings
from pipelines.rewards import outbox, store
from pipelines.rewards.merkle import build_tree
from pipelines.rewards.params import GovernedParams
from pipelines.rewards.runs import Exclusion, payable_runs
from pipelines.rewards.split import EpochInputs, EpochParams, SlashRequest, Split, SplitRules, split_rewards
from pipelines.rewards.usage import UsageExclusion, UsageInputs, paid_usage, payable_usage, usage_root
from pipelines.rewards.usage_split import Line, UsageSplit, split_usage
from pipelines.rewards.usage_terms import terms_of
from schemas import rewards as schema


class EpochConflict(RuntimeError):
    """An epoch id was already closed (or published) with a different root."""


class EpochNotClosed(LookupError):
    """The outbox has no RewardEpochClosed event for an epoch."""


class NothingToPay(LookupError):
    """No influence run and no usage event is left for a new epoch to pay: each is paid already or cannot be."""

    def __init__(self, epoch_id: int, excluded: tuple[Exclusion, ...],
                 usage_excluded: tuple[UsageExclusion, ...] = ()):
        self.epoch_id, self.excluded, self.usage_excluded = epoch_id, excluded, usage_excluded
        why = "; ".join([f"{x.run}: {x.reason}" for x in excluded] +
                        [f"usage {x.usage_event_id}: {x.reason}" for x in usage_excluded]) or "no influence scores yet"
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
    usage_events: int = 0                 # usage events it pays
    usage_fees: int = 0
    usage_paid: int = 0                   # wei of usage lines (fees + usage carry in - usage carry out)
    usage_carry_out: int = 0
    usage_excluded: tuple[UsageExclusion, ...] = ()  # usage events it does not pay, with why


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
                method: str | None = None, usage: UsageInputs | None = None) -> EpochResult:
    """Decides epoch ``epoch_id`` from the runs of ``inputs`` and the served calls of ``usage`` no other epoch
    paid, by the ``governed`` pool, rules and usage terms (``method``: the influence method to pay on), and
    records it on the log and under the data directory; raises ``NothingToPay`` rather than close an epoch
    that pays nothing."""
    rules = governed.split_rules(method)
    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    inputs, excluded = payable_runs(inputs, paid_runs(closed, besides=epoch_id), rules.method)
    priced, usage_excluded = [], ()
    if usage is not None:
        lines = outbox.committed(settings.kafka_bootstrap, (schema.USAGE_ALLOCATED,))
        usage = dataclasses.replace(usage, terms=terms_of(governed))  # the terms of the block the pool is of
        priced, usage_excluded = payable_usage(usage, paid_usage(lines, besides=epoch_id))
        if epoch_id in closed:  # closing it again: the calls it paid, not those logged since
            mine = {line["usage_event_id"] for line in lines.get(epoch_id, ())}
            priced = [p for p in priced if p.usage_event_id in mine]
    if epoch_id not in closed and inputs.influence.num_rows == 0 and not priced:
        raise NothingToPay(epoch_id, excluded, usage_excluded)
    carry_in, usage_carry_in = _carry_in(closed, epoch_id)
    params = EpochParams(epoch_id, governed.pool_for(len(inputs.influence_runs())), carry_in, rules)
    split = split_rewards(inputs, params)
    usage_split = split_usage(priced, usage_carry_in)
    accounts, amounts = _merge(split, usage_split)
    tree = build_tree(accounts, amounts) if accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, params.pool, params.carry_in,
                              split.carry_out, accounts, amounts, split.slash_requests, tree,
                              usage_split.fees, usage_split.carry_in, usage_split.carry_out)
    paid_ids = sorted(p.usage_event_id for p in priced)
    lines_table = _usage_table(usage_split)
    directory = epoch_dir(settings, epoch_id)
    if epoch_id in closed:
        previous = closed[epoch_id]
        if previous["merkle_root"] != "0x" + epoch.root.hex() or int(previous["total"]) != epoch.total:
            raise EpochConflict(f"epoch {epoch_id} was closed with root {previous['merkle_root']}; "
                                f"these inputs give 0x{epoch.root.hex()}")
        if not store.exists(directory):
            store.save(directory, epoch, split.allocations, lines_table)
        return _result(epoch, directory, excluded, usage_split, len(paid_ids), usage_excluded, already_closed=True)

    _write_decision(settings, epoch, split.allocations, usage_split, paid_ids, inputs, rules, governed)
    store.save(directory, epoch, split.allocations, lines_table)
    return _result(epoch, directory, excluded, usage_split, len(paid_ids), usage_excluded, already_closed=False)


def _merge(split: Split, usage_split: UsageSplit) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """One leaf per account: its training payout plus its usage earnings."""
    totals = dict(zip(split.accounts, split.amounts, strict=True))
    for account, amount in usage_split.by_account().items():
        totals[account] = totals.get(account, 0) + amount
    accounts = tuple(sorted(a for a, x in totals.items() if x > 0))
    return accounts, tuple(totals[a] for a in accounts)


def _usage_table(usage_split: UsageSplit) -> pa.Table:
    return pa.Table.from_pylist([_line_record(line, amount) for line, amount in usage_split.lines],
                                schema=schema.USAGE_PAYOUT)


def _line_record(line: Line, amount: int) -> dict:
    return {"usage_event_id": line.usage_event_id, "account": line.account, "role": line.role,
            "contribution_id": line.contribution_id, "datanet_id": line.datanet_id, "adapter_id": line.adapter_id,
            "amount": str(amount)}


def _carry_in(closed: dict[int, dict], epoch_id: int) -> tuple[int, int]:
    """The previous epoch's remainders (training pool, usage), from its RewardEpochClosed event; epochs close in
    order, so no remainder can be skipped."""
    if epoch_id < 1:
        raise ValueError("epoch ids start at 1")
    if epoch_id == 1:
        return 0, 0
    if epoch_id - 1 not in closed:
        raise EpochNotClosed(f"close epoch {epoch_id - 1} before epoch {epoch_id}: its remainder carries over")
    previous = closed[epoch_id - 1]
    return int(previous["carry_out"]), int(previous["usage_carry_out"])


def load_epoch(settings: Settings, epoch_id: int) -> store.ClosedEpoch:
    """The closed epoch from its files, rebuilt from the log first when they are missing."""
    directory = epoch_dir(settings, epoch_id)
    if not store.exists(directory):
        replay_epoch(settings, epoch_id)
    return store.load(directory)


def replay_epoch(settings: Settings, epoch_id: int) -> store.ClosedEpoch:
    """Rebuilds the epoch's files from the outbox log alone; fails if the root or the usage batch's root does
    not come out the same."""
    entries = outbox.read_epoch(settings.kafka_bootstrap, epoch_id)
    marker = _closed_entry(entries)
    if marker is None:
        raise EpochNotClosed(f"epoch {epoch_id} is not closed on the log")
    closed = {**schema.USAGE_BATCH_V1, **marker.record}
    window = outbox.window(entries, marker)
    allocated = {e.record["account"]: int(e.record["amount"]) for e in window
                 if e.type == schema.REWARD_ALLOCATED.name}
    contributions = [{name: e.record[name] for name in schema.ALLOCATION.names} for e in window
                     if e.type == schema.CONTRIBUTION_ALLOCATED.name]
    slashes = {e.record["contribution_id"]: SlashRequest.from_record(e.record)
               for e in window if e.type == schema.SLASH_REQUESTED.name}
    usage_lines = [{name: e.record[name] for name in schema.USAGE_PAYOUT.names} for e in window
                   if e.type == schema.USAGE_ALLOCATED.name]
    accounts = tuple(sorted(allocated))
    amounts = tuple(allocated[a] for a in accounts)
    tree = build_tree(accounts, amounts) if accounts else None
    epoch = store.ClosedEpoch(epoch_id, tree.root if tree else store.EMPTY_ROOT, int(closed["pool"]),
                              int(closed["carry_in"]), int(closed["carry_out"]), accounts, amounts,
                              tuple(slashes[c] for c in sorted(slashes)), tree, int(closed["usage_fees"]),
                              int(closed["usage_carry_in"]), int(closed["usage_carry_out"]))
    if "0x" + epoch.root.hex() != closed["merkle_root"] or len(accounts) != closed["accounts"]:
        raise EpochConflict(f"replaying epoch {epoch_id} gives root 0x{epoch.root.hex()}, "
                            f"the log recorded {closed['merkle_root']}")
    paid = sorted({line["usage_event_id"] for line in usage_lines})
    if usage_root(paid) != closed["usage_root"] or len(paid) != closed["usage_events"]:
        raise EpochConflict(f"replaying epoch {epoch_id} gives usage root {usage_root(paid)} over {len(paid)} "
                            f"events, the log recorded {closed['usage_root']} over {closed['usage_events']}")
    allocations = pa.Table.from_pylist(contributions, schema=schema.ALLOCATION) if contributions else None
    lines = pa.Table.from_pylist(usage_lines, schema=schema.USAGE_PAYOUT)
    store.save(epoch_dir(settings, epoch_id), epoch, allocations, lines)
    return epoch


def _closed_entry(entries: list[outbox.Entry]) -> outbox.Entry | None:
    closed = [e for e in entries if e.type == schema.REWARD_EPOCH_CLOSED.name]
    return closed[-1] if closed else None


def _write_decision(settings: Settings, epoch: store.ClosedEpoch, allocations: pa.Table, usage_split: UsageSplit,
                    paid_ids: list[str], inputs: EpochInputs, rules: SplitRules, governed: GovernedParams) -> None:
    """Allocations, usage lines and slash requests first, then the closing marker that names where they start."""
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
        usage_records = [_line_record(line, amount) for line, amount in usage_split.lines]
        writer.append(schema.USAGE_ALLOCATED, [
            {"event_id": outbox.derived_id("usage-allocated", n, *r.values()), "epoch_id": n, **r}
            for r in usage_records])
        writer.append(schema.SLASH_REQUESTED, [
            {"event_id": outbox.derived_id("slash-requested", n, r.contribution_id, r.reason_code), "epoch_id": n,
             **r.record()} for r in epoch.slash_requests])
        root, batch_root = "0x" + epoch.root.hex(), usage_root(paid_ids)
        writer.append(schema.REWARD_EPOCH_CLOSED, [{
            "event_id": outbox.derived_id("closed", n, root, inputs.digest(), batch_root), "epoch_id": n,
            "merkle_root": root, "total": str(epoch.total), "pool": str(epoch.pool), "carry_in": str(epoch.carry_in),
            "carry_out": str(epoch.carry_out), "accounts": len(epoch.accounts),
            "slash_requests": len(epoch.slash_requests), "first_offset": first_offset,
            "inputs_digest": inputs.digest(), "rules": rules.to_json(), "influence_runs": inputs.influence_runs(),
            "params": governed.to_json(), "params_block": governed.block,
            "usage_fees": str(usage_split.fees), "usage_carry_in": str(usage_split.carry_in),
            "usage_carry_out": str(usage_split.carry_out), "usage_events": len(paid_ids), "usage_root": batch_root,
        }])
    finally:
        writer.close()


def _result(epoch: store.ClosedEpoch, directory: Path, excluded: tuple[Exclusion, ...], usage_split: UsageSplit,
            usage_events: int, usage_excluded: tuple[UsageExclusion, ...], *, already_closed: bool) -> EpochResult:
    return EpochResult(epoch.epoch_id, "0x" + epoch.root.hex(), epoch.total, epoch.pool, epoch.carry_out,
                       len(epoch.accounts), len(epoch.slash_requests), directory, already_closed, excluded,
                       usage_events, usage_split.fees, usage_split.paid, usage_split.carry_out, usage_excluded)
