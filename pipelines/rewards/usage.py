"""Which usage events an epoch may pay, and what they are paid on: the rule every epoch close goes through.

Invariant 8 asks that a usage event be paid in at most one epoch, whoever closes it (CLI, Dagster, a
script), so ``payable_usage`` takes out of an epoch's usage, with the reason for each (an ``UsageExclusion``):

- events a closed epoch already paid (``paid in epoch <n>``: the UsageAllocated lines its marker commits);
- once the deployment has an AgentRegistry, events no staked serving agent vouches for: ``unsigned``,
  ``bad_signature``, ``agent_slashed``, ``agent_not_staked`` (``pipelines.rewards.agents``);
- events whose adapter is unknown (``unknown adapter <id>``: neither in the registry nor scored) or whose
  adapter's training run no closed epoch paid yet (``training run of adapter <id> not paid yet``): the
  training share is the influence shares that run was paid on, so it waits for that epoch;
- RAG events whose sources are not attributed yet (no ContextAttributed weights on the log);
- and, within an event, sources that may not earn: a revealed canary (the operator's planted known-bad text,
  never paid, as in the training split) or a contribution slashed on the log (its stake was taken for
  harm or duplication). Such a source drops out of the sources' share, which the others divide by their
  weights (or, with none left, passes to the training contributors as for an answer without sources);
- malformed events (ensemble lists of different lengths, weights that cannot split a fee, negative token
  counts, attribution weights for a contribution that was not retrieved), and events with nobody behind them
  (the base model alone, no retrieval).
Everything left out stays on the log unpaid; an event waiting for attribution or for its run is paid by the
first epoch after that arrives. A usage event sent twice (a retried request, a re-sent batch) has one id and
counts once.

The loaders read what the rule needs off the log (usage events, attribution weights, closed epochs, the
datanets' owners) and the adapter registry; the trainer paid for an adapter is its datanet's owner, since
adapters do not record who trained them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from payable.chain import Deployment
from payable.settings import Settings
from pipelines import log_views
from pipelines.attribution.canaries import payout_exclusions
from pipelines.rewards import outbox
from pipelines.rewards.agents import AgentBook, load_agent_book
from pipelines.rewards.inputs import scored_adapters
from pipelines.rewards.merkle import keccak
from pipelines.rewards.usage_split import AdapterBehind, NobodyToPay, PricedEvent, Source, price_event
from pipelines.rewards.usage_terms import UsageTerms, usage_terms
from schemas import events, topics
from schemas import rewards as schema
from schemas.usage import USAGE_EVENT

EMPTY_ROOT = "0x" + "00" * 32


@dataclass(frozen=True)
class UsageExclusion:
    """A usage event left out of an epoch, and why."""

    usage_event_id: str
    reason: str
    paid_in: int | None = None  # the epoch that paid it, when that is why it is left out

    def to_json(self) -> dict[str, str]:
        return {"excluded_usage": self.usage_event_id, "reason": self.reason}


@dataclass(frozen=True)
class PaidRun:
    """An adapter's training run as a closed epoch paid it: contribution id -> (contributor, weight)."""

    epoch_id: int
    datanet_id: int
    contributors: Mapping[int, tuple[str, Fraction]]


@dataclass(frozen=True)
class UsageInputs:
    """What an epoch's usage is decided from (the loaders below fill it from the log)."""

    events: tuple[dict, ...]                                    # UsageEvent records, one per id
    terms: UsageTerms
    source_weights: Mapping[str, Mapping[int, float]] = field(default_factory=dict)  # event -> contribution -> w
    runs: Mapping[tuple[int, str], PaidRun] = field(default_factory=dict)  # (datanet, adapter) -> its paid run
    known_adapters: frozenset[str] = frozenset()                # adapters in the registry or scored
    trainers: Mapping[int, str] = field(default_factory=dict)   # datanet id -> the trainer paid for its adapters
    unpayable_sources: frozenset[int] = frozenset()             # revealed canaries and slashed contributions
    agents: AgentBook | None = None                             # serving agents' standing; None: no AgentRegistry


def usage_root(usage_event_ids: list[str]) -> str:
    """keccak256 of the keccak256 of each paid usage event id, concatenated in ascending order of the hashes:
    a commitment to the batch that anyone holding the ids can recompute (and that is anchored on-chain)."""
    if not usage_event_ids:
        return EMPTY_ROOT
    return "0x" + keccak(b"".join(sorted(keccak(i.encode()) for i in usage_event_ids))).hex()


def paid_usage(committed_lines: Mapping[int, list[dict]], *, besides: int) -> dict[str, int]:
    """usage event id -> the closed epoch (other than ``besides``) that paid it, the first if several did."""
    return {line["usage_event_id"]: epoch_id for epoch_id, lines in sorted(committed_lines.items(), reverse=True)
            if epoch_id != besides for line in lines if "usage_event_id" in line}


def payable_usage(inputs: UsageInputs, paid: Mapping[str, int]) -> tuple[list[PricedEvent], tuple[UsageExclusion, ...]]:
    """The events an epoch may pay, priced (see the module docstring), and the others with why (those already
    paid with ``paid_in`` set: callers usually report only the ones still waiting)."""
    priced, excluded = [], []
    for event in sorted(inputs.events, key=lambda e: e["event_id"]):
        event_id = event["event_id"]
        if event_id in paid:
            excluded.append(UsageExclusion(event_id, f"paid in epoch {paid[event_id]}", paid[event_id]))
            continue
        refused = inputs.agents.refusal(event) if inputs.agents is not None else None
        if refused is not None:
            excluded.append(UsageExclusion(event_id, refused))
            continue
        try:
            priced.append(_price(event, inputs))
        except _NotPayable as why:
            excluded.append(UsageExclusion(event_id, str(why)))
    return priced, tuple(excluded)


class _NotPayable(Exception):
    pass


def _price(event: dict, inputs: UsageInputs) -> PricedEvent:
    event_id = event["event_id"]
    adapters = _adapters(event, inputs)
    sources = _sources(event, inputs)
    if event["prompt_tokens"] < 0 or event["completion_tokens"] < 0:
        raise _NotPayable("malformed: negative token counts")
    try:
        return price_event(event_id, inputs.terms.fee(event["prompt_tokens"], event["completion_tokens"]),
                           inputs.terms, sources, adapters)
    except NobodyToPay:
        raise _NotPayable("nobody behind it to pay (the base model alone, no retrieval)") from None
    except ValueError as exc:
        raise _NotPayable(f"malformed: {exc}") from None


def _adapters(event: dict, inputs: UsageInputs) -> list[AdapterBehind]:
    ids, datanets, weights = event["adapter_ids"], event["datanet_ids"], event["adapter_weights"]
    if not len(ids) == len(datanets) == len(weights):
        raise _NotPayable("malformed: adapter ids, datanets and weights differ in length")
    behind = []
    for adapter_id, datanet_id, weight in zip(ids, datanets, weights, strict=True):
        run = inputs.runs.get((datanet_id, adapter_id))
        if run is None:
            known = adapter_id in inputs.known_adapters
            raise _NotPayable(f"training run of adapter {adapter_id} not paid yet" if known
                              else f"unknown adapter {adapter_id}")
        behind.append(AdapterBehind(adapter_id, datanet_id, weight, inputs.trainers.get(datanet_id),
                                    run.contributors, _influences(event) if len(ids) == 1 else None))
    return behind


def _influences(event: dict) -> dict[int, float] | None:
    """The answer's top-k training contributions (v3 events that asked for attribution), by id."""
    listed = event.get("influences")
    return None if listed is None else {i["contribution_id"]: i["score"] for i in listed}


def _sources(event: dict, inputs: UsageInputs) -> list[Source]:
    retrieved = {s["contribution_id"]: s for s in event["retrieved_sources"]}
    if not retrieved:
        return []
    weights = inputs.source_weights.get(event["event_id"])
    if weights is None:
        raise _NotPayable("RAG sources not attributed yet")
    stray = sorted(set(weights) - set(retrieved))
    if stray:
        raise _NotPayable(f"malformed: attribution weights for contributions not retrieved: {stray}")
    return [Source(cid, retrieved[cid]["datanet_id"], retrieved[cid]["contributor"], weight)
            for cid, weight in sorted(weights.items()) if cid not in inputs.unpayable_sources]


# ---- loaders: the rule's inputs, off the log ------------------------------------------------------

def paid_runs_by_adapter(committed_records: Mapping[int, list[dict]],
                         closed: Mapping[int, dict]) -> dict[tuple[int, str], PaidRun]:
    """(datanet id, adapter id) -> the run a closed epoch paid for it, weighted as that epoch split its pool.

    A run ``"<datanet>:<version>:<adapter>:<method>"`` of epoch n pays, per contribution of the datanet that
    the epoch paid (outcome ``paid``), its positive influence times its contributor's reputation: the same
    weight the training pool was divided by."""
    runs: dict[tuple[int, str], PaidRun] = {}
    for epoch_id in sorted(closed):
        allocations = [r for r in committed_records.get(epoch_id, ())
                       if r.get("outcome") == "paid" and r["influence"] > 0]
        for run in closed[epoch_id]["influence_runs"]:
            datanet, _version, adapter_id, _method = run.split(":", 3)
            contributors = {r["contribution_id"]: (r["contributor"].lower(),
                                                   Fraction(r["influence"]) * r["reputation_ppb"])
                            for r in allocations if r["datanet_id"] == int(datanet)}
            runs.setdefault((int(datanet), adapter_id), PaidRun(epoch_id, int(datanet), contributors))
    return runs


def load_usage(settings: Settings, deployment: Deployment, closed: Mapping[int, dict],
               committed_records: Mapping[int, list[dict]]) -> UsageInputs:
    """The usage inputs as the log and the adapter registry stand now."""
    usage = log_views.read_view(settings.kafka_bootstrap, topics.USAGE).of(USAGE_EVENT)
    first = {e["event_id"]: e for e in reversed(usage)}  # a re-sent event counts once
    rag = any(e["retrieved_sources"] for e in first.values())
    return UsageInputs(
        events=tuple(first[i] for i in sorted(first)),
        terms=usage_terms(settings, deployment),
        source_weights=_source_weights(settings) if rag else {},
        runs=paid_runs_by_adapter(committed_records, closed),
        known_adapters=scored_adapters(settings) | {p.parent.name for p in Path(settings.adapters_dir).glob(
            "dn-*/*/lineage.json")},
        trainers=datanet_owners(settings.kafka_bootstrap),
        unpayable_sources=_unpayable_sources(settings) if rag else frozenset(),
        agents=load_agent_book(settings.kafka_bootstrap) if deployment.agents else None,
    )


def _unpayable_sources(settings: Settings) -> frozenset[int]:
    canaries = payout_exclusions(settings.kafka_bootstrap, refuse_pending=False)  # closing already refused pending
    return canaries | log_views.slashed_contributions(settings.kafka_bootstrap)


def _source_weights(settings: Settings) -> dict[str, dict[int, float]]:
    from pipelines.context_attribution.weights import source_weights  # the usage-attribution stage's output

    return source_weights(settings)


def datanet_owners(bootstrap: str) -> dict[int, str]:
    """datanet id -> its owner, from the DatanetCreated facts a reorg did not retract."""
    facts = log_views.read_view(bootstrap, topics.CHAIN_FACTS)
    retracted = log_views.retracted_ids(facts)
    return {f["datanet_id"]: f["owner"].lower() for f in facts.of(events.DATANET_CREATED)
            if f["event_id"] not in retracted}


def earnings_of(settings: Settings, usage_event_id: str) -> list[dict]:
    """What one served call earned whom, in the closed epoch that paid it (empty while unpaid): one dict per
    line with ``account``, ``role`` (source | training | trainer), ``contribution_id`` (None for the
    trainer), ``amount`` (wei, int) and ``epoch_id``."""
    lines = outbox.committed(settings.kafka_bootstrap, (schema.USAGE_ALLOCATED,))
    return [{"account": r["account"], "role": r["role"], "contribution_id": r["contribution_id"],
             "amount": int(r["amount"]), "epoch_id": epoch_id}
            for epoch_id, records in sorted(lines.items()) for r in records
            if r["usage_event_id"] == usage_event_id]


@dataclass(frozen=True)
class UsageLedger:
    """What the closed epochs paid for usage, off the log: the two money checks an operator watches."""

    closed: Mapping[int, dict]
    lines: Mapping[int, list[dict]]  # closed epoch -> its committed UsageAllocated records

    def paid_more_than_once(self) -> dict[str, list[int]]:
        """usage event id -> the epochs that paid it, for every event more than one epoch paid (should be empty)."""
        epochs_of: dict[str, set[int]] = {}
        for epoch_id, records in self.lines.items():
            for r in records:
                epochs_of.setdefault(r["usage_event_id"], set()).add(epoch_id)
        return {u: sorted(e) for u, e in sorted(epochs_of.items()) if len(e) > 1}

    def unbalanced(self) -> list[str]:
        """Epochs whose usage lines are not their fees plus the usage carry in minus the carry out, or whose carry
        in is not the previous epoch's carry out (should be empty)."""
        problems = []
        for epoch_id, closed in sorted(self.closed.items()):
            paid = sum(int(r["amount"]) for r in self.lines.get(epoch_id, ()))
            fees, carry_in, carry_out = (int(closed[k]) for k in ("usage_fees", "usage_carry_in", "usage_carry_out"))
            if paid != fees + carry_in - carry_out or carry_out < 0:
                problems.append(f"epoch {epoch_id}: lines {paid} != fees {fees} + carry in {carry_in} "
                                f"- carry out {carry_out}")
            previous = self.closed.get(epoch_id - 1)
            if previous is not None and int(previous["usage_carry_out"]) != carry_in:
                problems.append(f"epoch {epoch_id}: carry in {carry_in} != epoch {epoch_id - 1}'s carry out "
                                f"{previous['usage_carry_out']}")
        return problems

    def earnings(self) -> dict[str, int]:
        """account -> everything it earned from usage so far."""
        totals: dict[str, int] = {}
        for records in self.lines.values():
            for r in records:
                totals[r["account"]] = totals.get(r["account"], 0) + int(r["amount"])
        return totals


def usage_ledger(settings: Settings) -> UsageLedger:
    return UsageLedger(outbox.closed_epochs(settings.kafka_bootstrap),
                       outbox.committed(settings.kafka_bootstrap, (schema.USAGE_ALLOCATED,)))
