"""Validation rules for one contribution: plain functions, no I/O beyond the injected fetch.

Each rule returns a reason code (``pipelines.validate.reasons``) and human-readable evidence, or
passes. Rules run cheapest first and the first failure decides, so a verdict always names one reason.
Deduplication and the near-empty check need the sketches of a whole chunk and run after these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from payable.content_store import ContentStore, FetchError, sha256_hex
from payable.datanets import DatanetSpec
from pipelines.validate import reasons
from pipelines.validate.datanet_info import DatanetInfo


@dataclass(frozen=True)
class Checked:
    """The outcome of the per-contribution rules: a reason (None = passed), evidence, decoded text."""

    reason: str | None
    detail: str = ""
    text: str | None = None


def check_submission(fact: dict, datanet: DatanetInfo | None, store: ContentStore, size_cap: int) -> Checked:
    """Runs every per-contribution rule on a ContributionSubmitted fact, fetching its content."""
    if datanet is None or not datanet.created_before(fact["_partition"], fact["_offset"]):
        return Checked(reasons.UNKNOWN_DATANET, f"no DatanetCreated for datanet {fact['datanet_id']} before it")
    if datanet.spec is None:
        return Checked(reasons.DATANET_SPEC_INVALID, datanet.spec_error)
    max_size = min(datanet.max_size, size_cap)
    if fact["size"] > max_size:
        return Checked(reasons.TOO_LARGE, f"declared {fact['size']} bytes > limit {max_size}")
    try:
        data = store.fetch(fact["uri"], max_size)
    except FetchError as exc:
        return Checked(reasons.fetch_reason(exc.reason), str(exc))
    return check_content(data, fact["content_hash"], fact["size"], max_size, datanet.spec)


def check_content(data: bytes, content_hash: str, declared_size: int, max_size: int, spec: DatanetSpec) -> Checked:
    """Size, on-chain hash, UTF-8 and the datanet's format, in that order, on fetched bytes."""
    if len(data) > max_size:
        return Checked(reasons.TOO_LARGE, f"content is over the limit of {max_size} bytes")
    actual = sha256_hex(data)
    if actual != content_hash.lower():
        return Checked(reasons.HASH_MISMATCH, f"on-chain {content_hash}, content {actual}")
    if len(data) != declared_size:
        return Checked(reasons.SIZE_MISMATCH, f"declared {declared_size} bytes, content has {len(data)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Checked(reasons.NOT_UTF8, str(exc))
    if spec.format == "jsonl":
        failed = check_jsonl(text, spec.required_fields)
        if failed.reason:
            return failed
    return Checked(None, "", text)


def check_jsonl(text: str, required_fields: tuple[str, ...]) -> Checked:
    """Every non-blank line is a JSON object holding every required field."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return Checked(reasons.INVALID_JSONL, f"line {number}: {exc}")
        if not isinstance(record, dict):
            return Checked(reasons.INVALID_JSONL, f"line {number}: not a JSON object")
        missing = [name for name in required_fields if name not in record]
        if missing:
            return Checked(reasons.MISSING_FIELDS, f"line {number}: missing {missing}")
    return Checked(None, "", text)


def check_words(word_count: int, min_words: int) -> Checked:
    """Empty or near-empty content: fewer normalized words than the datanet can learn from."""
    if word_count < min_words:
        return Checked(reasons.EMPTY, f"{word_count} words after normalization, minimum {min_words}")
    return Checked(None)
