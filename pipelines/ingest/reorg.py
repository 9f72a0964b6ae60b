"""Reorg arithmetic, without I/O: where the stored chain and the canonical chain part, what to retract.

The ingester keeps the canonical hashes of the last blocks it processed (the reorg window). A hash chain
commits to its whole past, so the newest stored block whose hash is still canonical is the fork point;
facts seen in later blocks left the canonical chain and are retracted. No stored hash still canonical
means the reorg is deeper than the window: nothing here can say which facts are gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from schemas import events

RETRACTED = events.FACT_RETRACTED.name


def fork_point(next_block: int, stored: Sequence[str], canonical: Sequence[str | None]) -> int | None:
    """The newest block whose stored hash is still canonical, or None when none of them is.

    ``stored[i]`` and ``canonical[i]`` are the hashes of block ``next_block - len(stored) + i``;
    ``canonical[i]`` is None where the node no longer has that block (a shorter chain).
    """
    first = next_block - len(stored)
    for i in range(len(stored) - 1, -1, -1):
        if canonical[i] is not None and canonical[i] == stored[i]:
            return first + i
    return None


def extend_window(stored: list[str], next_block: int, hashes_first: int, hashes: list[str],
                  window: int) -> list[str]:
    """The window after appending ``hashes`` (of blocks from ``hashes_first`` on), newest ``window`` kept.

    The stored hashes (of the blocks before ``next_block``) stay only when the new ones continue them.
    """
    kept = stored if hashes_first == next_block else []
    return (kept + hashes)[-window:]


def trim_marks(mark_blocks: list[int], mark_offsets: list[list[int]], oldest_block: int
               ) -> tuple[list[int], list[list[int]]]:
    """Drops the marks of chunks that lie wholly before ``oldest_block`` (out of the window)."""
    keep = 0
    for i, block in enumerate(mark_blocks):
        if block <= oldest_block:
            keep = i
    return mark_blocks[keep:], mark_offsets[keep:]


def start_offsets(mark_blocks: Sequence[int], mark_offsets: Sequence[Sequence[int]], first_block: int,
                  partitions: int) -> list[int]:
    """Per partition, an offset at or before the first fact of any block >= ``first_block`` (0 if unknown)."""
    chosen: Sequence[int] = ()
    for block, offsets in zip(mark_blocks, mark_offsets, strict=True):
        if block <= first_block:
            chosen = offsets
    return [chosen[p] if p < len(chosen) else 0 for p in range(partitions)]


def live_orphans(messages: Iterable[tuple[bytes, str, dict]], orphaned: set[str]) -> list[tuple[bytes, str, dict]]:
    """Facts (key, type name, record) seen in an ``orphaned`` block and not retracted since, in log order."""
    live: dict[tuple[str, str], tuple[bytes, str, dict]] = {}
    for key, name, record in messages:
        if name == RETRACTED:
            live.pop((record["retracted_event_id"], record["retracted_block_hash"]), None)
        elif record.get("block_hash") in orphaned:
            live[(record["event_id"], record["block_hash"])] = (key, name, record)
    return list(live.values())


def retraction(name: str, fact: dict, reason: str) -> dict:
    """The FactRetracted record for ``fact`` (of type ``name``); its id hashes the fact's id and block."""
    digest = hashlib.sha256(f"{fact['event_id']}@{fact['block_hash']}".encode()).hexdigest()
    return {
        "event_id": f"{fact['chain_id']}:retracted:{digest}",
        "chain_id": fact["chain_id"],
        "retracted_event_id": fact["event_id"],
        "retracted_event_type": name,
        "retracted_block_number": fact["block_number"],
        "retracted_block_hash": fact["block_hash"],
        "datanet_id": fact.get("datanet_id"),
        "contribution_id": fact.get("contribution_id"),
        "reason": reason,
    }
