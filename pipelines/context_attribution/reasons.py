"""Machine-readable reasons a usage event is not attributed: the vocabulary of ``ContextAttributionSkipped``.

The audit and the Dagster check match on these strings, so they are constants here and nowhere else.
"""

from __future__ import annotations

NO_SOURCES = "no_sources"  # nothing was retrieved: not a RAG answer, nothing to attribute
NO_TRANSCRIPT = "no_transcript"  # the usage event carries no question or answer text (e.g. a v1 event)
UNKNOWN_ADAPTER = "unknown_adapter"  # an adapter the registry does not hold: the answer cannot be rescored
UNKNOWN_CHUNK = "unknown_chunk"  # a retrieved chunk id no retrieval index holds: its text cannot be rebuilt

REASONS = frozenset({NO_SOURCES, NO_TRANSCRIPT, UNKNOWN_ADAPTER, UNKNOWN_CHUNK})
