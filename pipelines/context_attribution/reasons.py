"""Machine-readable reasons a usage event is not attributed: the vocabulary of ``ContextAttributionSkipped``.

The audit and the Dagster check match on these strings, so they are constants here and nowhere else.
Only RAG answers (usage events with retrieved sources) are decided; a plain completion has nothing to
attribute and gets no record.
"""

from __future__ import annotations

NO_TRANSCRIPT = "no_transcript"  # no messages or answer text (a v1 event, or an answer cut before its first word)
UNKNOWN_ADAPTER = "unknown_adapter"  # an adapter the registry does not hold or cannot load: no rescoring
UNKNOWN_BASE_MODEL = "unknown_base_model"  # served on a base model this stage cannot rebuild
UNKNOWN_CHUNK = "unknown_chunk"  # a chunk its dataset version does not hold: its text cannot be rebuilt
CONTEXT_EXCEEDED = "context_exceeded"  # the rebuilt prompt and answer no longer fit the model's context

REASONS = frozenset({NO_TRANSCRIPT, UNKNOWN_ADAPTER, UNKNOWN_BASE_MODEL, UNKNOWN_CHUNK, CONTEXT_EXCEEDED})
