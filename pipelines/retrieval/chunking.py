"""Cutting a contribution into retrievable chunks: word windows with overlap, pure and deterministic."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_WORDS = 120   # MiniLM reads 256 word pieces; 120 words stay well inside that for English prose
OVERLAP_WORDS = 20  # a fact cut by a boundary still appears whole in one of the two chunks


@dataclass(frozen=True)
class Chunk:
    index: int  # position of the chunk within its contribution, from 0
    text: str


def chunk_text(text: str, *, words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    """Windows of ``words`` words, each starting ``words - overlap`` after the previous; [] for blank text."""
    if not 0 <= overlap < words:
        raise ValueError(f"need 0 <= overlap < words, got overlap={overlap}, words={words}")
    tokens = text.split()
    if not tokens:
        return []
    step = words - overlap
    starts = range(0, max(len(tokens) - overlap, 1), step)
    return [Chunk(i, " ".join(tokens[start:start + words])) for i, start in enumerate(starts)]
