"""Read-only views of the log: decoded chain facts and each contribution's current verdict.

These are the ground truth every stage reads (validation's checks, training's dataset, attribution, the
audit database) and compares its projections against; they sit here, beside no stage, so that no stage
depends on a later one (audit is the last stage and nothing imports it). A record that does not decode is
returned separately, never silently dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from payable import kafka_log
from schemas import events, topics
from schemas.verdicts import CONTRIBUTION_VERDICT


@dataclass
class LogView:
    """Records of one topic by event type, in log order, plus the ones that did not decode."""

    by_type: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    undecodable: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, error)
    # (partition, offset) of each record of by_type, at the same index: where on the log a row came from.
    positions: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    undecodable_raw: list[bytes | None] = field(default_factory=list)  # the values of ``undecodable``

    def of(self, event_type: events.EventType) -> list[dict]:
        return self.by_type.get(event_type.name, [])

    def positioned(self, event_type: events.EventType) -> list[tuple[int, int, dict]]:
        """(partition, offset, record) of each record of ``event_type``, in log order."""
        return [(p, o, r) for (p, o), r in zip(self.positions.get(event_type.name, []), self.of(event_type),
                                               strict=True)]


def read_view(bootstrap: str, topic: str) -> LogView:
    view = LogView()
    for message in kafka_log.read_topic(bootstrap, topic):
        try:
            event_type, record = events.decode(message.value, message.headers)
        except events.SchemaError as exc:
            view.undecodable.append((message.partition, message.offset, str(exc)))
            view.undecodable_raw.append(message.value)
            continue
        view.by_type[event_type.name].append(record)
        view.positions[event_type.name].append((message.partition, message.offset))
    return view


def retracted_ids(facts: LogView) -> set[str]:
    """Event ids of the chain facts a reorg retracted (a FactRetracted names each one)."""
    return {r["retracted_event_id"] for r in facts.of(events.FACT_RETRACTED)}


def slashed_contributions(bootstrap: str) -> set[int]:
    """Contribution ids whose StakeSlashed fact is on the log and not retracted by a reorg."""
    facts = read_view(bootstrap, topics.CHAIN_FACTS)
    retracted = retracted_ids(facts)
    return {f["contribution_id"] for f in facts.of(events.STAKE_SLASHED) if f["event_id"] not in retracted}


def live_submissions(facts: LogView) -> dict[int, dict]:
    """contribution id -> its ContributionSubmitted fact, minus facts retracted by a reorg."""
    retracted = retracted_ids(facts)
    return {
        fact["contribution_id"]: fact
        for fact in facts.of(events.CONTRIBUTION_SUBMITTED)
        if fact["event_id"] not in retracted
    }


def current_verdicts(verdicts: LogView) -> dict[int, dict]:
    """contribution id -> its latest verdict (a datanet's verdicts share a partition, so order holds)."""
    latest: dict[int, dict] = {}
    for verdict in verdicts.of(CONTRIBUTION_VERDICT):
        latest[verdict["contribution_id"]] = verdict
    return latest


def accepted_contributions(bootstrap: str, datanet_id: int) -> set[int]:
    """Ids of the datanet's contributions whose current verdict is ``accepted``, read from the log."""
    verdicts = current_verdicts(read_view(bootstrap, topics.VERDICTS))
    return {c for c, v in verdicts.items() if v["datanet_id"] == datanet_id and v["status"] == "accepted"}


@dataclass(frozen=True)
class Grant:
    """One grant of access to a permissioned datanet, as the log tells it, with the revocation that ended it."""

    datanet_id: int
    builder: str
    granted: dict
    """The AccessGranted fact (its ``event_id`` is the grant's id)."""
    revoked: dict | None = None
    """The AccessRevoked fact that ended it, or ``None`` while it is live."""


def _chain_order(fact: dict) -> tuple[int, int]:
    return fact["block_number"], fact["log_index"]


def access_grants(facts: LogView) -> list[Grant]:
    """Every grant on the log in chain order, each paired with the revocation that ended it.

    Facts a reorg retracted are left out (a grant or revocation that left the canonical chain counts for
    nothing), and a fact seen twice counts once. The contract refuses a second live grant and a revocation
    without one, so the grants and revocations of one (datanet, builder) alternate in chain order.
    """
    retracted = retracted_ids(facts)
    changes = {f["event_id"]: (f, event_type is events.ACCESS_REVOKED)
               for event_type in (events.ACCESS_GRANTED, events.ACCESS_REVOKED) for f in facts.of(event_type)
               if f["event_id"] not in retracted}
    grants: list[Grant] = []
    live: dict[tuple[int, str], int] = {}  # (datanet, builder) -> index of its live grant in ``grants``
    for fact, is_revocation in sorted(changes.values(), key=lambda change: _chain_order(change[0])):
        holder = (fact["datanet_id"], fact["builder"].lower())
        if not is_revocation:
            live[holder] = len(grants)
            grants.append(Grant(*holder, fact))
        elif holder in live:
            index = live.pop(holder)
            grants[index] = Grant(*holder, grants[index].granted, fact)
    return grants


def live_datanets(facts: LogView) -> dict[int, dict]:
    """datanet id -> its DatanetCreated fact, minus facts retracted by a reorg."""
    retracted = retracted_ids(facts)
    return {f["datanet_id"]: f for f in facts.of(events.DATANET_CREATED) if f["event_id"] not in retracted}
