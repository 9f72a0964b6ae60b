"""The reward split: an epoch's pool divided among contributors by positive influence and reputation.

A pure, deterministic function of its inputs (no clock, no randomness, no I/O), so replaying the same
log gives the same payouts to the token unit.

Formula, for epoch e with pool P_e and the previous epoch's undistributed remainder C_{e-1}:

1. Eligible contribution c: its verdict is ``accepted``, its stake has not been slashed, and the attribution
   stage did not flag it harmful (its influence raises the eval loss beyond the noise of the estimate, see
   ``pipelines.attribution.harm``). Everything else earns 0.
2. Influence s_c = mean of c's scores for the epoch's method (one row per adapter / dataset version it
   was measured in; the mean, so re-materializing a contribution in several versions is not counted
   twice); the sum is exactly rounded (math.fsum), so row order cannot change it.
   Only positive influence pays: p_c = max(s_c, 0), converted exactly (no rounding) to an integer on a
   common binary scale.
3. Reputation of contributor a, from the latest verdict on each of a's contributions so far (accepted
   A_a, rejected R_a; rejections for a neutral reason such as ``retracted`` do not count), smoothed by a
   Beta(alpha, beta) prior: r_a = (A_a + alpha) / (A_a + R_a + alpha + beta), taken as an integer in
   parts per 1e9 (floor). A newcomer starts at alpha / (alpha + beta).
4. Weight w_a = r_a * sum of p_c over a's eligible contributions; W = sum of w_a.
5. Distributable D = P_e + C_{e-1}. Payout a_a = floor(D * w_a / W) token units (exact integer
   arithmetic), so sum(a_a) <= D always; accounts whose payout floors to 0 get no leaf. The remainder
   C_e = D - sum(a_a) (under one unit per contributor with weight, or all of D when W = 0) carries to
   epoch e+1.

Penalties: a contribution rejected for a redundant reason (``pipelines.validate.reasons.PENALIZED``:
``duplicate``, ``duplicate_normalized``, ``near_duplicate``) or a harmful one (``harmful``,
``adversarial``, ``poisoned``) earns nothing and yields a slash request (reason code 1 = redundant,
2 = harmful) for the datanet's validator key, unless its stake is already slashed. Other rejections (e.g.
``hash_mismatch``) earn nothing and keep their stake.

A revealed canary (the operator's planted known-bad contribution, ``pipelines.attribution.canaries``) earns
nothing and is never slashed (outcome ``canary``). An accepted contribution flagged harmful by attribution earns
nothing; its stake is slashed (reason 2) only
on confirmed evidence (invariant 7): the bootstrap interval of its score lies below zero, and the refit of the
adapter without the flagged contributions lowered the eval loss by more than ``refit_margin`` times the
seed-to-seed spread of the full-data fit (``HarmEvidence.confirmed``). The margin, whether the refit is required
at all, and the reputation prior are governed parameters (``pipelines.rewards.params``), like the pool. A flag
without that confirmation (``harmful_unconfirmed``) keeps its stake. The evidence travels with the slash request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.rewards.runs import run_names
from pipelines.validate import reasons
from schemas import rewards as schema

REPUTATION_SCALE = 10**9


class SlashReason(IntEnum):
    """The ``reasonCode`` passed to ``DatanetRegistry.slash``."""

    REDUNDANT = 1
    HARMFUL = 2


@dataclass(frozen=True)
class SplitRules:
    """Policy of the split, stable across epochs (changed deliberately, recorded with each epoch)."""

    method: str | None = None  # influence method to pay on; None: the only one in the table
    prior_accepted: int = 1    # alpha of the reputation prior
    prior_rejected: int = 1    # beta of the reputation prior
    redundant_reasons: tuple[str, ...] = tuple(sorted(reasons.PENALIZED))
    harmful_reasons: tuple[str, ...] = ("harmful", "adversarial", "poisoned")
    refit_margin: float = 1.0
    """A harm slash needs the refit's eval-loss improvement above this many seed-to-seed spreads."""
    require_refit: bool = True
    """Whether a harm slash needs the counterfactual refit at all (False: the interval below zero suffices)."""
    # Rejections that are no fault of the contributor (a reorg dropped the fact) and do not lower reputation.
    neutral_reasons: tuple[str, ...] = (reasons.RETRACTED,)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class EpochParams:
    epoch_id: int
    pool: int          # token units newly allotted to this epoch
    carry_in: int = 0  # the previous epoch's remainder
    rules: SplitRules = field(default_factory=SplitRules)


@dataclass(frozen=True)
class HarmEvidence:
    """Why attribution flagged an accepted contribution harmful (the influence table's evidence columns)."""

    score: float
    score_low: float
    score_high: float
    robust_z: float
    refit_delta: float | None = None
    """Eval-loss improvement of the refit without the flagged contributions (None: no refit was run)."""
    refit_spread: float | None = None
    """Seed-to-seed range of the full-data fit's eval loss."""

    def confirmed(self, rules: SplitRules) -> bool:
        """The money rule: the whole interval below zero, and (unless governance waived the refit) the refit
        beat the seed noise."""
        if not rules.require_refit:
            return self.score_high < 0
        if self.refit_delta is None or self.refit_spread is None:
            return False
        beats_noise = self.refit_delta > max(rules.refit_margin * self.refit_spread, 0.0)
        return self.score_high < 0 and beats_noise


@dataclass(frozen=True)
class EpochInputs:
    """What an epoch is decided from: tables with the columns of ``schemas.rewards``."""

    influence: pa.Table      # INFLUENCE columns: this epoch's scores
    verdicts: pa.Table       # VERDICT columns: each contribution's latest verdict up to the epoch's cut-off
    slashed: frozenset[int]  # contribution ids whose stake is already slashed on-chain
    # contribution id -> evidence, for the contributions the attribution stage flagged as harmful
    harmful: Mapping[int, HarmEvidence] = field(default_factory=dict)
    # revealed canary contribution ids (pipelines.attribution.canaries): the operator's plants, never paid
    canaries: frozenset[int] = frozenset()

    def influence_runs(self) -> list[str]:
        """The (datanet, dataset version, adapter, method) runs whose scores these inputs pay on."""
        return sorted(set(run_names(self.influence)))

    def digest(self) -> str:
        """A hash of the inputs, recorded with the epoch so a replay can tell it used the same ones."""
        h = hashlib.sha256()
        for table, sort in ((self.influence, ["contribution_id", "dataset_version", "adapter_id", "method"]),
                            (self.verdicts, ["contribution_id"])):
            ordered = table.sort_by([(c, "ascending") for c in sort])
            for name in sorted(ordered.column_names):
                column = ordered.column(name)
                h.update(name.encode())
                if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                    h.update(column.is_null().to_numpy(zero_copy_only=False).tobytes())
                    h.update(pc.fill_null(column, 0).to_numpy().tobytes())
                else:
                    h.update(json.dumps(column.to_pylist()).encode())
        h.update(json.dumps(sorted(self.slashed)).encode())
        h.update(json.dumps([[cid, dataclasses.asdict(self.harmful[cid])] for cid in sorted(self.harmful)]).encode())
        if self.canaries:
            h.update(json.dumps(["canaries", sorted(self.canaries)]).encode())
        return "0x" + h.hexdigest()


@dataclass(frozen=True)
class SlashRequest:
    """One stake to slash and why; a harm slash carries its evidence (``HarmEvidence``'s fields), a
    redundancy slash none (its evidence is the verdict)."""

    contribution_id: int
    datanet_id: int
    contributor: str
    reason_code: int
    reason: str
    score: float | None = None
    score_low: float | None = None
    score_high: float | None = None
    robust_z: float | None = None
    refit_delta: float | None = None
    refit_spread: float | None = None

    def record(self) -> dict:
        """The SlashRequested event's fields (besides its id and epoch)."""
        return {**dataclasses.asdict(self), "reason_code": int(self.reason_code)}

    @classmethod
    def from_record(cls, record: dict) -> SlashRequest:
        """Inverse of :meth:`record`, from a SlashRequested event (v1 events carry no evidence)."""
        return cls(**{f.name: record.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Split:
    """An epoch's decision: who is paid what, what carries over, whose stake is slashed, and why."""

    epoch_id: int
    distributable: int
    accounts: tuple[str, ...]   # sorted, lower-case, each paid > 0
    amounts: tuple[int, ...]
    slash_requests: tuple[SlashRequest, ...]
    allocations: pa.Table       # ALLOCATION: the audit trail, one row per scored contribution

    @property
    def total(self) -> int:
        return sum(self.amounts)

    @property
    def carry_out(self) -> int:
        return self.distributable - self.total


def split_rewards(inputs: EpochInputs, params: EpochParams) -> Split:
    """Applies the module's formula to one epoch's inputs."""
    if params.pool < 0 or params.carry_in < 0:
        raise ValueError("pool and carry_in must be non-negative")
    rules = params.rules
    verdicts = _verdicts(inputs.verdicts)
    reputation = _reputation(verdicts, rules)
    influence = _mean_influence(inputs.influence, rules.method)

    weights: dict[str, int] = {}
    rows = []
    harmful_ids: set[int] = set()
    for cid, (contributor, datanet_id, score, exact) in influence.items():
        status, reason, verdict_contributor, _ = verdicts.get(cid, ("missing", None, contributor, datanet_id))
        if verdict_contributor != contributor:
            raise ValueError(f"contribution {cid}: influence names {contributor}, its verdict {verdict_contributor}")
        outcome = _outcome(cid, status, reason, inputs, rules)
        if outcome == "harmful_influence":
            harmful_ids.add(cid)
        if outcome == "paid" and exact > 0:
            weights[contributor] = weights.get(contributor, 0) + exact
        elif outcome == "paid":
            outcome = "no_positive_influence"
        rows.append({"contribution_id": cid, "contributor": contributor, "datanet_id": datanet_id,
                     "influence": score, "reputation_ppb": reputation(contributor), "outcome": outcome})

    distributable = params.pool + params.carry_in
    weighted = {a: w * reputation(a) for a, w in weights.items()}
    total_weight = sum(weighted.values())
    paid = {a: distributable * w // total_weight for a, w in weighted.items()} if total_weight else {}
    accounts = tuple(sorted(a for a, amount in paid.items() if amount > 0))
    allocations = pa.Table.from_pylist(sorted(rows, key=lambda r: r["contribution_id"]), schema=schema.ALLOCATION)
    return Split(
        epoch_id=params.epoch_id,
        distributable=distributable,
        accounts=accounts,
        amounts=tuple(paid[a] for a in accounts),
        slash_requests=_slash_requests(verdicts, {c: inputs.harmful[c] for c in harmful_ids}, inputs.slashed, rules),
        allocations=allocations,
    )


def _verdicts(table: pa.Table) -> dict[int, tuple[str, str | None, str, int]]:
    """contribution id -> (status, reason, contributor, datanet id); conflicting verdicts are an error."""
    out: dict[int, tuple[str, str | None, str, int]] = {}
    columns = table.select(["contribution_id", "status", "reason", "contributor", "datanet_id"]).to_pydict()
    for cid, status, reason, contributor, datanet_id in zip(*columns.values(), strict=True):
        if status not in ("accepted", "rejected"):
            raise ValueError(f"contribution {cid}: verdict status must be accepted or rejected, got {status!r}")
        verdict = (status, reason, contributor.lower(), datanet_id)
        if out.setdefault(cid, verdict) != verdict:
            raise ValueError(f"contribution {cid} has conflicting verdicts: {out[cid]} and {verdict}")
    return out


def _reputation(verdicts: dict[int, tuple[str, str | None, str, int]], rules: SplitRules) -> Callable[[str], int]:
    """contributor -> smoothed acceptance rate in parts per 1e9 (floor)."""
    if rules.prior_accepted < 0 or rules.prior_rejected < 0 or rules.prior_accepted + rules.prior_rejected == 0:
        raise ValueError("the reputation prior needs alpha, beta >= 0 and alpha + beta > 0")
    accepted: dict[str, int] = {}
    decided: dict[str, int] = {}
    for status, reason, contributor, _ in verdicts.values():
        if status == "rejected" and reason in rules.neutral_reasons:
            continue
        decided[contributor] = decided.get(contributor, 0) + 1
        accepted[contributor] = accepted.get(contributor, 0) + (status == "accepted")
    alpha, beta = rules.prior_accepted, rules.prior_rejected
    known = {c: (accepted[c] + alpha) * REPUTATION_SCALE // (n + alpha + beta) for c, n in decided.items()}
    newcomer = alpha * REPUTATION_SCALE // (alpha + beta)
    return lambda contributor: known.get(contributor, newcomer)


def _mean_influence(table: pa.Table, method: str | None) -> dict[int, tuple[str, int, float, int]]:
    """contribution id -> (contributor, datanet id, mean score, max(mean, 0) as an exact scaled integer)."""
    methods = sorted(set(table.column("method").to_pylist()))
    if method is None and len(methods) > 1:
        raise ValueError(f"influence has several methods {methods}: choose one in SplitRules.method")
    chosen = method if method is not None else (methods[0] if methods else None)
    rows = table.filter(pc.equal(table.column("method"), chosen)) if chosen is not None else table
    rows = rows.sort_by([("contribution_id", "ascending")])
    ids = rows.column("contribution_id").to_numpy()
    scores = rows.column("score").to_numpy()
    if not np.all(np.isfinite(scores)):
        raise ValueError("influence scores must be finite")
    contributors = rows.column("contributor").to_pylist()
    datanets = rows.column("datanet_id").to_pylist()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], dtype=np.int64)
    counts = np.diff(np.r_[starts, len(ids)])
    means = scores[starts].tolist()
    for group in np.flatnonzero(counts > 1):  # fsum is exactly rounded: row order cannot change the mean
        first, count = starts[group], counts[group]
        means[group] = math.fsum(scores[first: first + count]) / count
    exact = _exact_integers([max(m, 0.0) for m in means])
    out = {}
    for start, mean, value in zip(starts.tolist(), means, exact, strict=True):
        out[int(ids[start])] = (contributors[start].lower(), datanets[start], mean, value)
    return out


def _exact_integers(values: list[float]) -> list[int]:
    """Non-negative floats as integers on one binary scale, exactly (x = m * 2**e with integer m)."""
    parts = []
    for value in values:
        mantissa, exponent = math.frexp(value)
        parts.append((int(mantissa * 2**53), exponent - 53) if value > 0 else (0, 0))
    low = min((e for m, e in parts if m), default=0)
    return [m << (e - low) if m else 0 for m, e in parts]


def _outcome(cid: int, status: str, reason: str | None, inputs: EpochInputs, rules: SplitRules) -> str:
    if status == "missing":
        return "no_verdict"
    if status == "rejected":
        return f"rejected:{reason or 'unspecified'}"
    if cid in inputs.canaries:
        return "canary"
    if cid in inputs.slashed:
        return "slashed"
    if cid in inputs.harmful:
        return "harmful_influence" if inputs.harmful[cid].confirmed(rules) else "harmful_unconfirmed"
    return "paid"


def _slash_requests(verdicts: dict[int, tuple[str, str | None, str, int]], harmful: dict[int, HarmEvidence],
                    slashed: frozenset[int], rules: SplitRules) -> tuple[SlashRequest, ...]:
    """Confirmed harm (with its evidence), and redundant or harmful rejections (the verdict is the evidence)."""
    requests = []
    for cid in sorted(set(verdicts) | set(harmful)):
        if cid in slashed:
            continue
        status, reason, contributor, datanet_id = verdicts[cid]
        if cid in harmful:
            requests.append(SlashRequest(cid, datanet_id, contributor, SlashReason.HARMFUL, "harmful_influence",
                                         **dataclasses.asdict(harmful[cid])))
        elif status == "rejected" and reason in rules.redundant_reasons:
            requests.append(SlashRequest(cid, datanet_id, contributor, SlashReason.REDUNDANT, reason))
        elif status == "rejected" and reason in rules.harmful_reasons:
            requests.append(SlashRequest(cid, datanet_id, contributor, SlashReason.HARMFUL, reason))
    return tuple(requests)
