"""Building ContributionVerdict records with deterministic ids.

The id hashes every input of the decision and the decision itself, never wall-clock time or the run,
so the same facts judged by the same rules always yield byte-identical verdicts.
"""

from __future__ import annotations

import hashlib

from pipelines.validate import reasons
from pipelines.validate.config import ValidateConfig


def verdict_id(fact_event_id: str, fact_block_hash: str, content_hash: str, status: str, reason: str | None,
               duplicate_of: int | None, config: ValidateConfig) -> str:
    """0x + sha256 of the fact's identity, its content hash, the rules and the decision (unit-separated)."""
    doc = (fact_event_id, fact_block_hash, content_hash, status, reason or "", "" if duplicate_of is None
           else str(duplicate_of), config.rules_version, config.fingerprint)
    return "0x" + hashlib.sha256("\x1f".join(doc).encode()).hexdigest()


def make_verdict(fact: dict, reason: str | None, detail: str, config: ValidateConfig, *,
                 duplicate_of: int | None = None, similarity: float | None = None) -> dict:
    """A ContributionVerdict record for ``fact`` (CANDIDATE columns); ``reason`` None means accepted."""
    status = reasons.ACCEPTED if reason is None else reasons.REJECTED
    return {
        "verdict_id": verdict_id(fact["event_id"], fact["block_hash"], fact["content_hash"], status, reason,
                                 duplicate_of, config),
        "fact_event_id": fact["event_id"],
        "fact_block_hash": fact["block_hash"],
        "chain_id": fact["chain_id"],
        "block_number": fact["block_number"],
        "contribution_id": fact["contribution_id"],
        "datanet_id": fact["datanet_id"],
        "contributor": fact["contributor"],
        "content_hash": fact["content_hash"],
        "status": status,
        "reason": reason,
        "duplicate_of": duplicate_of,
        "similarity": similarity,
        "penalize": reason in reasons.PENALIZED,
        "detail": detail,
        "source_partition": fact["partition"],
        "source_offset": fact["offset"],
        "rules_version": config.rules_version,
    }
