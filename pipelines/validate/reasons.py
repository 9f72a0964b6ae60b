"""Machine-readable reason codes of rejected contributions: the vocabulary of the verdicts topic.

Downstream stages (penalties, audit) match on these strings, so they are constants here and nowhere
else. Fetch failures reuse ``payable.content_store.FetchError.reason``, prefixed with ``fetch_``
(``fetch_failed`` stays as it is).
"""

from __future__ import annotations

ACCEPTED = "accepted"
REJECTED = "rejected"

UNKNOWN_DATANET = "unknown_datanet"
DATANET_SPEC_INVALID = "datanet_spec_invalid"
FETCH_BAD_URI = "fetch_bad_uri"
FETCH_CONTENT_MISSING = "fetch_content_missing"
FETCH_UNSUPPORTED_URI = "fetch_unsupported_uri"
FETCH_FAILED = "fetch_failed"
HASH_MISMATCH = "hash_mismatch"
SIZE_MISMATCH = "size_mismatch"
TOO_LARGE = "too_large"
NOT_UTF8 = "not_utf8"
INVALID_JSONL = "invalid_jsonl"
MISSING_FIELDS = "missing_fields"
EMPTY = "empty"
RETRACTED = "retracted"
DUPLICATE = "duplicate"
DUPLICATE_NORMALIZED = "duplicate_normalized"
NEAR_DUPLICATE = "near_duplicate"

# Reasons the penalty stage acts on: the contributor resubmitted content that is already in the datanet.
PENALIZED = frozenset({DUPLICATE, DUPLICATE_NORMALIZED, NEAR_DUPLICATE})


def fetch_reason(fetch_error_reason: str) -> str:
    """The verdict reason for a ``FetchError`` reason code."""
    return fetch_error_reason if fetch_error_reason.startswith("fetch_") else f"fetch_{fetch_error_reason}"
