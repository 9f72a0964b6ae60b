"""Rows of the chain-fact tables (chain_events, datanets, contributions, access_grants) from the chain-facts log.

Retracted facts stay in ``chain_events`` with ``retracted = true`` (the audit shows what happened, reorgs
included); ``contributions`` holds each contribution's live fact, or its last retracted one when a reorg
removed it for good, so every submission ever seen is accounted for (invariant 5).
"""

from __future__ import annotations

from pipelines.log_views import LogView, access_grants, live_datanets, retracted_ids
from schemas import events

# Fact fields that fill chain_events' generic columns, by event type.
_ACCOUNT_FIELD = {"DatanetCreated": "owner", "ContributionSubmitted": "contributor", "StakeSlashed": "validator",
                  "StakeReleased": "contributor", "RewardClaimed": "account", "ValidatorSet": "validator",
                  "AccessRequested": "builder", "AccessGranted": "builder", "AccessRevoked": "builder",
                  "AgentRegistered": "agent", "AgentUnstaked": "agent", "AgentSlashed": "agent"}
_AMOUNT_FIELD = {"ContributionSubmitted": "stake", "StakeSlashed": "amount", "StakeReleased": "amount",
                 "EpochPublished": "total", "RewardClaimed": "amount", "DatanetCreated": "min_stake",
                 "AgentRegistered": "stake", "AgentUnstaked": "stake", "AgentSlashed": "amount"}
_CHAIN_FACTS = (events.DATANET_CREATED, events.CONTRIBUTION_SUBMITTED, events.STAKE_SLASHED, events.STAKE_RELEASED,
                events.VALIDATOR_SET, events.MINIMUM_STAKE_CHANGED, events.EPOCH_PUBLISHED, events.REWARD_CLAIMED,
                events.ACCESS_REQUESTED, events.ACCESS_GRANTED, events.ACCESS_REVOKED, events.AGENT_REGISTERED,
                events.AGENT_UNSTAKED, events.AGENT_SLASHED)


def chain_event_rows(facts: LogView) -> list[dict]:
    """One row per distinct chain fact (a replayed fact has the same event id and is kept once)."""
    retracted = retracted_ids(facts)
    rows: dict[str, dict] = {}
    for event_type in _CHAIN_FACTS:
        for partition, offset, fact in facts.positioned(event_type):
            rows.setdefault(fact["event_id"], {
                "event_id": fact["event_id"], "event_type": event_type.name, "chain_id": fact["chain_id"],
                "block_number": fact["block_number"], "block_hash": fact["block_hash"], "tx_hash": fact["tx_hash"],
                "log_index": fact["log_index"], "contract": fact["contract"], "datanet_id": fact.get("datanet_id"),
                "contribution_id": fact.get("contribution_id"), "epoch_id": fact.get("epoch_id"),
                "account": _lower(fact.get(_ACCOUNT_FIELD.get(event_type.name, ""))),
                "amount": fact.get(_AMOUNT_FIELD.get(event_type.name, "")),
                "retracted": fact["event_id"] in retracted, "log_partition": partition, "log_offset": offset})
    return sorted(rows.values(), key=lambda r: r["event_id"])


def datanet_rows(facts: LogView) -> list[dict]:
    return [{"datanet_id": d, "owner": f["owner"].lower(), "metadata_uri": f["metadata_uri"],
             "min_stake": f["min_stake"], "max_contribution_size": f["max_contribution_size"],
             "permissioned": f["permissioned"], "validators": [v.lower() for v in f["validators"]],
             "event_id": f["event_id"], "tx_hash": f["tx_hash"], "block_number": f["block_number"]}
            for d, f in sorted(live_datanets(facts).items())]


def access_grant_rows(facts: LogView) -> list[dict]:
    """One row per live grant of access to a permissioned datanet, with the request before it (if the builder
    asked) and the revocation that ended it (if any). Retracted grants are only in chain_events."""
    retracted = retracted_ids(facts)
    requests = sorted((f for f in facts.of(events.ACCESS_REQUESTED) if f["event_id"] not in retracted),
                      key=lambda f: (f["block_number"], f["log_index"]))
    rows = []
    for grant in access_grants(facts):
        granted, revoked = grant.granted, grant.revoked or {}
        asked = [r for r in requests if (r["datanet_id"], r["builder"].lower()) == (grant.datanet_id, grant.builder)
                 and (r["block_number"], r["log_index"]) < (granted["block_number"], granted["log_index"])]
        rows.append({"event_id": granted["event_id"], "datanet_id": grant.datanet_id, "builder": grant.builder,
                     "tx_hash": granted["tx_hash"], "block_number": granted["block_number"],
                     "requested_event_id": asked[-1]["event_id"] if asked else None,
                     "revoked_event_id": revoked.get("event_id"), "revoked_tx_hash": revoked.get("tx_hash"),
                     "revoked_block_number": revoked.get("block_number"), "live": grant.revoked is None})
    return rows


def contribution_rows(facts: LogView) -> list[dict]:
    retracted = retracted_ids(facts)
    chosen: dict[int, dict] = {}
    for fact in facts.of(events.CONTRIBUTION_SUBMITTED):
        previous = chosen.get(fact["contribution_id"])
        if previous is None or previous["event_id"] in retracted:
            chosen[fact["contribution_id"]] = fact
    return [{"contribution_id": c, "datanet_id": f["datanet_id"], "contributor": f["contributor"].lower(),
             "content_hash": f["content_hash"], "uri": f["uri"], "size": f["size"], "stake": f["stake"],
             "event_id": f["event_id"], "tx_hash": f["tx_hash"], "block_number": f["block_number"],
             "block_hash": f["block_hash"], "retracted": f["event_id"] in retracted}
            for c, f in sorted(chosen.items())]


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else None
