"""The usage split: each served call's fee divided among the data and the trainer behind it. Pure: no I/O.

For one usage event with fee F (``UsageTerms.fee``: its tokens at the price per token) and the terms' shares
in basis points (sources s, training t, trainer r; s + t + r = 10,000):

1. RAG sources: s/10,000 of F, by the context-attribution weight of each retrieved contribution (weights
   sum to 1 per event), to the contribution's contributor.
2. Training contributors: t/10,000 of F. An answer from adapter k (an ensemble: adapter weight a_k over the
   sum of the weights) pays the contributions its training run was paid on, by the weight the reward epoch
   that paid the run gave them (positive influence times the contributor's reputation, ``split.py``). When
   the event names the answer's own most influential training contributions (``influences``, asked for
   with ``attribution``: TracIn on this answer's loss, read from the adapter's gradient store), the share
   follows them instead: the fee pays for this answer, and the list measures which data it leaned on,
   where the run's weights measure the eval set. Only positive scores of contributions the run was paid
   on count (a slashed, canary or harmful contribution never earns through an answer), normalised; with
   none left, the run's weights.
3. The adapter's trainer: r/10,000 of F, split over the ensemble's adapters by a_k.

A part with nobody to pay goes to the next part that has someone: no retrieved sources -> the sources' part
goes to the training contributors (then the trainer); no adapter or no paid contribution behind it -> the
training part goes to the sources (then the trainer); no trainer -> to the training contributors (then the
sources). An event with nobody at all behind it is not payable (the caller records why).

Each line's exact share is a fraction of F (``fractions.Fraction``, so nothing is rounded until the end).
An epoch pays its events' fees F_e plus the previous epoch's usage remainder C: the line with exact share
x gets floor((F_e + C) * x / F_e) wei, and the remainder (under one wei per line) carries to the next
epoch's usage, as the training pool's remainder does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from pipelines.rewards.usage_terms import BPS, UsageTerms

ROLES = ("source", "training", "trainer")
# Where a part with nobody to pay goes, in order of preference (see the module docstring).
FALLBACK = {"source": ("training", "trainer"), "training": ("source", "trainer"), "trainer": ("training", "source")}


class NobodyToPay(ValueError):
    """A usage event with no source, no paid training contribution and no trainer behind it."""


@dataclass(frozen=True)
class Source:
    """A retrieved contribution and its context-attribution weight in the answer."""

    contribution_id: int
    datanet_id: int
    contributor: str
    weight: float


@dataclass(frozen=True)
class AdapterBehind:
    """One adapter that answered: its ensemble weight, its trainer, and the contributions its run was paid on."""

    adapter_id: str
    datanet_id: int
    weight: float
    trainer: str | None
    contributors: Mapping[int, tuple[str, Fraction]]  # contribution id -> (contributor, weight in its epoch)
    influences: Mapping[int, float] | None = None  # contribution id -> the answer's influence (its top-k list)


@dataclass(frozen=True)
class Line:
    """One payee of one usage event: who, in which role, for which contribution (None: the trainer)."""

    usage_event_id: str
    account: str
    role: str
    contribution_id: int | None
    datanet_id: int | None
    adapter_id: str | None


@dataclass(frozen=True)
class PricedEvent:
    """A payable usage event: its fee and each line's exact share of it (shares sum to the fee)."""

    usage_event_id: str
    fee: int
    shares: Mapping[Line, Fraction]


@dataclass(frozen=True)
class UsageSplit:
    """An epoch's usage decision: the amount of every line, and the remainder carried over."""

    fees: int
    carry_in: int
    lines: tuple[tuple[Line, int], ...]  # sorted by (event, role, contribution, account, adapter)

    @property
    def paid(self) -> int:
        return sum(amount for _, amount in self.lines)

    @property
    def carry_out(self) -> int:
        return self.fees + self.carry_in - self.paid

    def by_account(self) -> dict[str, int]:
        """account -> its usage earnings in the epoch (accounts with 0 left out)."""
        totals: dict[str, int] = {}
        for line, amount in self.lines:
            if amount:
                totals[line.account] = totals.get(line.account, 0) + amount
        return totals


def price_event(usage_event_id: str, fee: int, terms: UsageTerms, sources: Sequence[Source],
                adapters: Sequence[AdapterBehind]) -> PricedEvent:
    """The exact share of each payee of one event (module docstring, points 1-3 and the fallbacks)."""
    if fee < 0:
        raise ValueError(f"usage event {usage_event_id}: negative fee {fee}")
    groups = {role: _normalized(weights) for role, weights in (
        ("source", _source_weights(usage_event_id, sources)),
        ("training", _training_weights(usage_event_id, adapters)),
        ("trainer", _trainer_weights(usage_event_id, adapters)))}
    parts = {"source": terms.sources_bps, "training": terms.training_bps, "trainer": terms.trainer_bps}
    for role in ROLES:
        if groups[role]:
            continue
        heir = next((other for other in FALLBACK[role] if groups[other]), None)
        if heir is None:
            raise NobodyToPay(f"usage event {usage_event_id}: no source, paid contribution or trainer behind it")
        parts[heir] += parts[role]
        parts[role] = 0
    shares: dict[Line, Fraction] = {}
    for role in ROLES:
        for line, weight in groups[role].items():
            shares[line] = shares.get(line, Fraction(0)) + Fraction(fee * parts[role], BPS) * weight
    return PricedEvent(usage_event_id, fee, shares)


def split_usage(events: Sequence[PricedEvent], carry_in: int = 0) -> UsageSplit:
    """The epoch's usage lines in wei: floor((fees + carry_in) * share / fees) each (module docstring)."""
    if carry_in < 0:
        raise ValueError("the usage carry must be non-negative")
    fees = sum(e.fee for e in events)
    scale = Fraction(fees + carry_in, fees) if fees else Fraction(0)
    lines = [(line, math.floor(share * scale)) for e in events for line, share in e.shares.items()]
    lines.sort(key=lambda item: _order(item[0]))
    return UsageSplit(fees, carry_in, tuple(lines))


def _order(line: Line) -> tuple:
    return (line.usage_event_id, ROLES.index(line.role), line.contribution_id or -1, line.account,
            line.adapter_id or "")


def _normalized(weights: dict[Line, Fraction]) -> dict[Line, Fraction]:
    """Positive weights scaled to sum to 1; empty when none is positive."""
    kept = {line: w for line, w in weights.items() if w > 0}
    total = sum(kept.values(), Fraction(0))
    return {line: w / total for line, w in kept.items()} if total else {}


def _source_weights(usage_event_id: str, sources: Sequence[Source]) -> dict[Line, Fraction]:
    out: dict[Line, Fraction] = {}
    for s in sources:
        if not math.isfinite(s.weight) or s.weight < 0:
            raise ValueError(f"usage event {usage_event_id}: source weight {s.weight} of contribution "
                             f"{s.contribution_id} is not a finite non-negative number")
        line = Line(usage_event_id, s.contributor.lower(), "source", s.contribution_id, s.datanet_id, None)
        out[line] = out.get(line, Fraction(0)) + Fraction(s.weight)
    return out


def _adapter_weights(usage_event_id: str, adapters: Sequence[AdapterBehind]) -> list[Fraction]:
    weights = [a.weight for a in adapters]
    if any(not math.isfinite(w) or w < 0 for w in weights) or (adapters and sum(weights) <= 0):
        raise ValueError(f"usage event {usage_event_id}: ensemble weights {weights} are not finite, "
                         "non-negative and positive in sum")
    return [Fraction(w) for w in weights]


def _training_weights(usage_event_id: str, adapters: Sequence[AdapterBehind]) -> dict[Line, Fraction]:
    """Each adapter's paid contributions by the answer's influence or their epoch weight (point 2), within the
    adapter's ensemble weight."""
    out: dict[Line, Fraction] = {}
    for adapter, adapter_weight in zip(adapters, _adapter_weights(usage_event_id, adapters), strict=True):
        weights = _contribution_weights(usage_event_id, adapter)
        total = sum(weights.values(), Fraction(0))
        if total <= 0:
            continue
        for cid, weight in weights.items():
            line = Line(usage_event_id, adapter.contributors[cid][0].lower(), "training", cid, adapter.datanet_id,
                        adapter.adapter_id)
            out[line] = out.get(line, Fraction(0)) + adapter_weight * weight / total
    return out


def _contribution_weights(usage_event_id: str, adapter: AdapterBehind) -> dict[int, Fraction]:
    """The answer's positive influences on the run's paid contributions, else the run's epoch weights."""
    scores = dict(adapter.influences or {})
    bad = [cid for cid, score in scores.items() if not math.isfinite(score)]
    if bad:
        raise ValueError(f"usage event {usage_event_id}: influence of contribution {bad[0]} is not finite")
    answer = {cid: Fraction(score) for cid, score in scores.items() if score > 0 and cid in adapter.contributors}
    return answer or {cid: weight for cid, (_, weight) in adapter.contributors.items()}


def _trainer_weights(usage_event_id: str, adapters: Sequence[AdapterBehind]) -> dict[Line, Fraction]:
    out: dict[Line, Fraction] = {}
    for adapter, weight in zip(adapters, _adapter_weights(usage_event_id, adapters), strict=True):
        if adapter.trainer:
            line = Line(usage_event_id, adapter.trainer.lower(), "trainer", None, adapter.datanet_id,
                        adapter.adapter_id)
            out[line] = out.get(line, Fraction(0)) + weight
    return out
