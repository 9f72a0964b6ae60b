"""A validator's checks of what a serving agent reported: the evidence a slash of its stake is sent with.

A serving agent's usage events are claims: "this call used these sources of that dataset version, took this many
tokens". Each check below finds a claim the record itself refutes, without trusting the agent:

- ``phantom_citation``: a retrieved source names a contribution the dataset version it cites never held (the
  retrieval index is built from that version, so the index never held it either);
- ``misattributed_citation``: the contribution is there but the source names another contributor (it would
  route the source's share to someone who did not write it);
- ``duplicated_request``: one request id reported twice with different contents (a retry re-sends the same
  signed event; a different one is a second claim for one call);
- ``forged_id``: the event id is not the hash of its request id (``serving.usage.usage_id``), so the once-only
  payment of a request could be dodged;
- ``tokens_beyond_context``: more prompt plus completion tokens than the base model's context can hold.

Only events the agent signed count (anything else is not its report, and is never paid anyway). The findings
hash to ``evidence_hash`` (keccak256 of their canonical JSON), which the slash names on-chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import lance
from eth_utils import keccak

from payable.settings import Settings
from pipelines import log_views
from pipelines.validate.materialize import dataset_uri
from schemas import topics
from schemas.usage import USAGE_EVENT, usage_digest, usage_signer
from serving.usage import usage_id

Held = Mapping[int, str]
"""contribution id -> its contributor (lower-case), of one dataset version."""


@dataclass(frozen=True)
class Finding:
    """One refuted claim of one usage event."""

    usage_event_id: str
    check: str
    detail: str


@dataclass(frozen=True)
class Evidence:
    """An agent's refuted claims, as a validator publishes them."""

    agent: str
    context_tokens: int
    reports: int
    findings: tuple[Finding, ...]

    def to_json(self) -> str:
        body = {"agent": self.agent, "context_tokens": self.context_tokens, "reports": self.reports,
                "findings": [asdict(f) for f in self.findings]}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @property
    def evidence_hash(self) -> str:
        return "0x" + keccak(self.to_json().encode()).hex()

    @property
    def reason(self) -> str:
        """The distinct checks that failed, comma-separated: the slash's on-chain reason."""
        return ",".join(sorted({f.check for f in self.findings}))


def check_agent(agent: str, usage: Iterable[dict], held: Callable[[int, int], Held], context_tokens: int) -> Evidence:
    """The findings against ``agent`` over the usage events it signed; ``held(datanet, version)`` is the dataset
    version's contributions (empty for a version that does not exist)."""
    agent = agent.lower()
    reports = [e for e in usage if (e.get("agent") or "").lower() == agent and e.get("signature")
               and usage_signer(e) == agent]
    findings: list[Finding] = []
    digests: dict[str, bytes] = {}
    for event in reports:
        event_id = event["event_id"]
        digest = usage_digest(event)
        if digests.setdefault(event["request_id"], digest) != digest:
            findings.append(Finding(event_id, "duplicated_request",
                                    f"request {event['request_id']} reported again with other contents"))
        if event_id != usage_id(event["request_id"]):
            findings.append(Finding(event_id, "forged_id",
                                    f"event id is not the hash of request {event['request_id']}"))
        tokens = event["prompt_tokens"] + event["completion_tokens"]
        if tokens > context_tokens:
            findings.append(Finding(event_id, "tokens_beyond_context",
                                    f"{tokens} tokens in a context of {context_tokens}"))
        findings += _citation_findings(event, held)
    return Evidence(agent, context_tokens, len(reports), tuple(findings))


def _citation_findings(event: dict, held: Callable[[int, int], Held]) -> list[Finding]:
    findings = []
    for source in event["retrieved_sources"]:
        contributions = held(source["datanet_id"], source["dataset_version"])
        cid, where = source["contribution_id"], f"datanet {source['datanet_id']} version {source['dataset_version']}"
        if cid not in contributions:
            findings.append(Finding(event["event_id"], "phantom_citation", f"contribution {cid} is not in {where}"))
        elif contributions[cid] != source["contributor"].lower():
            findings.append(Finding(event["event_id"], "misattributed_citation",
                                    f"contribution {cid} of {where} is {contributions[cid]}'s, not "
                                    f"{source['contributor'].lower()}'s"))
    return findings


# ---- loaders: the agent's reports off the log, the dataset versions off Lance ------------------------------

def verify_agent(settings: Settings, agent: str, context_tokens: int) -> Evidence:
    """The findings against ``agent`` over every usage event on the log (re-sent copies included: a copy that
    differs is a finding), checked against the materialized dataset versions."""
    usage = log_views.read_view(settings.kafka_bootstrap, topics.USAGE).of(USAGE_EVENT)

    @cache
    def held(datanet_id: int, version: int) -> dict[int, str]:
        try:
            table = lance.dataset(dataset_uri(settings.lance_dir, datanet_id), version=version).to_table(
                columns=["contribution_id", "contributor"])
        except (ValueError, OSError):  # no such dataset, or no such version of it
            return {}
        return {c: who.lower() for c, who in zip(table["contribution_id"].to_pylist(),
                                                  table["contributor"].to_pylist(), strict=True)}

    return check_agent(agent, usage, held, context_tokens)


def save_evidence(settings: Settings, evidence: Evidence) -> Path:
    """Writes the evidence where anyone can check it against the hash the slash named; returns its path."""
    path = settings.data_dir / "agents" / "evidence" / f"{evidence.evidence_hash}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(evidence.to_json() + "\n")
    return path
