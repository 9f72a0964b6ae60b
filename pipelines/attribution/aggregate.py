"""From example-by-query scores to contributions and contributors, with the evidence behind each score.

- A contribution's score per query is the sum over its examples (a long text is cut into several).
- Identical contributions (same content hash) share ONE copy's credit, split equally: a duplicate adds
  nothing to the data, so it must not add to anyone's pay (as identical players split a Shapley value).
- A contribution's score is its mean influence over the eval queries (a held-out contribution's own query
  is excluded); its evidence is the queries it helped and hurt most.
- A contributor's total is the sum of their contributions' scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContributionScores:
    """Per contribution (in input order): score, copies sharing its credit, its influence per query and per
    checkpoint (the evidence ``harm.py`` tests)."""

    score: np.ndarray
    copies: np.ndarray
    per_query: np.ndarray
    """(contributions, queries) credited influence; NaN where a query is the contribution itself."""
    per_checkpoint: np.ndarray
    """(contributions, checkpoints) mean credited influence over the queries at each checkpoint (sums to score)."""


def contribution_scores(example_scores: np.ndarray, owner: np.ndarray, content_hashes: list[str],
                        self_query: np.ndarray) -> ContributionScores:
    """``example_scores`` is (examples, queries, checkpoints); ``owner[i]`` the contribution of example i;
    ``self_query[c]`` the query index of contribution c or -1. Every contribution needs a query other than
    itself (``attribute`` refuses a run where one has none)."""
    n = len(content_hashes)
    by_checkpoint = np.zeros((n, *example_scores.shape[1:]))
    np.add.at(by_checkpoint, owner, example_scores)
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(content_hashes):
        groups.setdefault(h, []).append(i)
    copies = np.ones(n, dtype=np.int32)
    for members in groups.values():
        if len(members) > 1:
            by_checkpoint[members] = by_checkpoint[members].mean(axis=0) / len(members)
            copies[members] = len(members)
    has_self = self_query >= 0
    by_checkpoint[np.flatnonzero(has_self), self_query[has_self]] = np.nan
    per_query = by_checkpoint.sum(axis=2)
    counted = np.maximum((~np.isnan(per_query)).sum(axis=1), 1)
    per_checkpoint = np.where(np.isnan(by_checkpoint), 0.0, by_checkpoint).sum(axis=1) / counted[:, None]
    return ContributionScores(score=per_checkpoint.sum(axis=1), copies=copies, per_query=per_query,
                              per_checkpoint=per_checkpoint)


def ranks(score: np.ndarray) -> np.ndarray:
    """1 = most helpful; ties broken by input order (contribution id order), so ranks are deterministic."""
    order = np.lexsort((np.arange(len(score)), -score))
    out = np.empty(len(score), dtype=np.int32)
    out[order] = np.arange(1, len(score) + 1, dtype=np.int32)
    return out


def evidence(per_query: np.ndarray, query_ids: list[str], k: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per contribution: the k queries it helped most (score > 0) and hurt most (score < 0)."""
    helped, hurt = [], []
    for row in per_query:
        valid = np.flatnonzero(~np.isnan(row))
        by_score = valid[np.argsort(-row[valid], kind="stable")]
        helped.append([{"query_id": query_ids[j], "score": float(row[j])} for j in by_score[:k] if row[j] > 0])
        hurt.append([{"query_id": query_ids[j], "score": float(row[j])} for j in by_score[::-1][:k] if row[j] < 0])
    return helped, hurt


def contributor_totals(contributors: list[str], score: np.ndarray) -> dict[str, float]:
    """Sum of contribution scores per contributor."""
    totals: dict[str, float] = {}
    for who, s in zip(contributors, score, strict=True):
        totals[who] = totals.get(who, 0.0) + float(s)
    return totals
