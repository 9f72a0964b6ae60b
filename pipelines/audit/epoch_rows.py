"""Rows of the reward tables: epochs, account payouts, per-contribution payouts, usage payouts, slash requests,
tx states.

Everything comes from the rewards outbox and the chain facts: the per-contribution allocation
(influence, reputation, outcome) is the epoch's ContributionAllocated events, written with the epoch, so
deleting every projection and replaying the log gives the same rows whatever the epoch's own effects
(its slashes) or later epochs changed since (``allocation_source`` is ``log``; ``unavailable`` for an
epoch closed before allocations went on the log, and reconciliation then reports it). The only other
input is the influence table, to name the dataset version and adapter whose scores gave each allocation.

An account's leaf holds its training payout plus its usage earnings (the epoch's UsageAllocated lines, one
``usage_payouts`` row each); only the training part is apportioned over its contributions in ``payouts``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from pipelines.audit.shares import apportion
from pipelines.log_views import LogView, retracted_ids
from pipelines.rewards.split import SlashRequest
from schemas import events
from schemas import rewards as schema


@dataclass
class EpochRows:
    reward_epochs: list[dict]
    account_payouts: list[dict]
    payouts: list[dict]
    slash_requests: list[dict]
    reward_tx_states: list[dict]
    usage_payouts: list[dict]


def epoch_rows(outbox: LogView, facts: LogView, influence: pa.Table | None,
               contribution_events: dict[int, str]) -> EpochRows:
    """All reward rows; ``contribution_events`` maps contribution id -> its ContributionSubmitted event id."""
    retracted = retracted_ids(facts)
    published = {f["epoch_id"]: f for f in facts.of(events.EPOCH_PUBLISHED) if f["event_id"] not in retracted}
    claims = {(f["epoch_id"], f["account"].lower()): f for f in facts.of(events.REWARD_CLAIMED)
              if f["event_id"] not in retracted}
    markers = {r["epoch_id"]: (p, o, r) for p, o, r in outbox.positioned(schema.REWARD_EPOCH_CLOSED)}
    out = EpochRows([], [], [], [], _tx_state_rows(outbox), [])
    for epoch_id in sorted(markers):
        partition, offset, closed = markers[epoch_id]

        def window(event_type: events.EventType, epoch_id: int = epoch_id, partition: int = partition,
                   start: int = closed["first_offset"], end: int = offset) -> list[dict]:
            return [r for p, o, r in outbox.positioned(event_type)
                    if p == partition and start <= o < end and r["epoch_id"] == epoch_id]

        allocated = {r["account"].lower(): r for r in window(schema.REWARD_ALLOCATED)}
        accounts = [_account_row(epoch_id, i, a, r, claims.get((epoch_id, a)))
                    for i, (a, r) in enumerate(sorted(allocated.items()))]
        requested = window(schema.SLASH_REQUESTED)
        allocations = [{name: r[name] for name in schema.ALLOCATION.names}
                       for r in window(schema.CONTRIBUTION_ALLOCATED)]
        usage = [{**{n: r[n] for n in ("epoch_id", *schema.USAGE_PAYOUT.names)}, "allocated_event_id": r["event_id"],
                  "claim_tx_hash": claims.get((epoch_id, r["account"]), {}).get("tx_hash")}
                 for r in window(schema.USAGE_ALLOCATED)]
        source = "log" if allocations or usage else "unavailable"
        out.reward_epochs.append(_epoch_row({**schema.USAGE_BATCH_V1, **closed}, published.get(epoch_id), source))
        out.account_payouts += accounts
        out.usage_payouts += usage
        out.payouts += _payout_rows(epoch_id, allocations, training_leaves(accounts, usage), influence, closed,
                                    contribution_events)
        out.slash_requests += [{**SlashRequest.from_record(r).record(), "epoch_id": epoch_id,
                                "contributor": r["contributor"].lower(), "requested_event_id": r["event_id"]}
                               for r in requested]
    return out


def training_leaves(accounts: list[dict], usage: list[dict]) -> list[dict]:
    """The account rows with each amount less the account's usage earnings in the epoch: the training part."""
    earned: dict[str, int] = defaultdict(int)
    for line in usage:
        earned[line["account"]] += int(line["amount"])
    return [{**a, "amount": str(int(a["amount"]) - earned[a["account"]])} for a in accounts]


def _account_row(epoch_id: int, leaf_index: int, account: str, allocated: dict, claim: dict | None) -> dict:
    """``leaf_index`` is the account's position in the epoch's ascending accounts, as in its Merkle leaf."""
    return {"epoch_id": epoch_id, "account": account, "leaf_index": leaf_index, "amount": allocated["amount"],
            "allocated_event_id": allocated["event_id"], "claimed": claim is not None,
            "claim_event_id": claim and claim["event_id"], "claim_tx_hash": claim and claim["tx_hash"],
            "claimed_amount": claim and claim["amount"], "claim_block_number": claim and claim["block_number"]}


def _epoch_row(closed: dict, published: dict | None, source: str) -> dict:
    return {"epoch_id": closed["epoch_id"], "merkle_root": closed["merkle_root"], "total": closed["total"],
            "pool": closed["pool"], "carry_in": closed["carry_in"], "carry_out": closed["carry_out"],
            "accounts": closed["accounts"], "slash_requests": closed["slash_requests"],
            "inputs_digest": closed["inputs_digest"], "rules": closed["rules"],
            "params": closed.get("params"), "params_block": closed.get("params_block"),  # v1 markers: none
            "method": json.loads(closed["rules"]).get("method"), "influence_runs": closed["influence_runs"],
            "closed_event_id": closed["event_id"],
            "allocation_source": source, "published": published is not None,
            "publish_event_id": published and published["event_id"],
            "publish_tx_hash": published and published["tx_hash"],
            "published_root": published and published["merkle_root"],
            "published_total": published and published["total"],
            **{name: closed[name] for name in schema.USAGE_BATCH_V1}}


def _tx_state_rows(outbox: LogView) -> list[dict]:
    rows = {}
    for _, offset, r in outbox.positioned(schema.REWARD_TX_STATE):
        rows.setdefault(r["event_id"], {**{k: v for k, v in r.items() if k != "raw_tx"}, "log_offset": offset})
    return sorted(rows.values(), key=lambda r: (r["epoch_id"], r["log_offset"]))


def _payout_rows(epoch_id: int, allocations: list[dict], accounts: list[dict], influence: pa.Table | None,
                 closed: dict, contribution_events: dict[int, str]) -> list[dict]:
    """One row per allocated contribution: its share of its account's leaf and the scores behind it."""
    leaves = {a["account"]: a for a in accounts}
    evidence = _evidence(allocations, influence, json.loads(closed["rules"]).get("method"))
    by_account: dict[str, dict[int, float]] = defaultdict(dict)
    for a in allocations:
        by_account[a["contributor"].lower()][a["contribution_id"]] = a["influence"] if a["outcome"] == "paid" else 0.0
    shares = {cid: share for account, weights in by_account.items()
              for cid, share in apportion(int(leaves[account]["amount"]) if account in leaves else 0, weights).items()}
    rows = []
    for a in sorted(allocations, key=lambda r: r["contribution_id"]):
        cid, account = a["contribution_id"], a["contributor"].lower()
        version, adapter, method = evidence.get(cid, (None, None, None))
        rows.append({"epoch_id": epoch_id, "contribution_id": cid, "account": account, "datanet_id": a["datanet_id"],
                     "dataset_version": version, "adapter_id": adapter, "method": method,
                     "influence": a["influence"], "reputation_ppb": a["reputation_ppb"], "outcome": a["outcome"],
                     "amount": str(shares[cid]), "event_id": contribution_events.get(cid),
                     "tx_hash": leaves.get(account, {}).get("claim_tx_hash")})
    return rows


def _evidence(allocations: list[dict], influence: pa.Table | None,
              method: str | None) -> dict[int, tuple[int, str, str]]:
    """contribution id -> (dataset version, adapter id, method) whose scores give exactly its allocated influence.

    Per datanet, the newest (version, method) whose per-contribution mean reproduces every allocated value
    bit for bit: the epoch does not record which version it paid on, this finds it from the numbers.
    """
    if influence is None or not allocations:
        return {}
    scores: dict[tuple[int, int, str], dict[int, list[tuple[float, str]]]] = defaultdict(lambda: defaultdict(list))
    columns = influence.select(["datanet_id", "dataset_version", "method", "contribution_id", "score", "adapter_id"])
    for d, v, m, c, s, ad in zip(*columns.to_pydict().values(), strict=True):
        if method is None or m == method:
            scores[(d, v, m)][c].append((s, ad))
    wanted: dict[int, dict[int, float]] = defaultdict(dict)
    for a in allocations:
        wanted[a["datanet_id"]][a["contribution_id"]] = a["influence"]
    found = {}
    for datanet_id, expected in wanted.items():
        for d, v, m in sorted((k for k in scores if k[0] == datanet_id), key=lambda k: (-k[1], k[2])):
            rows = scores[(d, v, m)]
            if all(c in rows and math.fsum(s for s, _ in rows[c]) / len(rows[c]) == x for c, x in expected.items()):
                found.update({c: (v, min(ad for _, ad in rows[c]), m) for c in expected})
                break
    return found
