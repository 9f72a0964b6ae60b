"""Hybrid retrieval over one or more datanets' indexes: vector and full-text, fused by reciprocal rank.

Reciprocal-rank fusion (score = sum over the two rankings of 1 / (60 + rank)) needs no calibration
between cosine similarities and BM25 scores, which is why LanceDB's ``RRFReranker`` is the default.
Results of several datanets are merged by that fused score.
"""

from __future__ import annotations

from dataclasses import dataclass

from payable.settings import Settings
from pipelines.retrieval.embed import embed
from pipelines.retrieval.index import index_dir, index_version, table_name


@dataclass(frozen=True)
class Source:
    """One retrieved chunk and where it came from (what a citation names)."""

    contribution_id: int
    datanet_id: int
    contributor: str
    chunk_id: str
    dataset_version: int
    text: str
    score: float  # fused retrieval score: higher is better


def search(settings: Settings, datanet_ids: list[int], query: str, k: int = 4) -> list[Source]:
    """The ``k`` best chunks for ``query`` across ``datanet_ids``; LookupError for a datanet without an index."""
    import lancedb
    from lancedb.rerankers import RRFReranker

    if not query.strip():
        return []
    db = lancedb.connect(str(index_dir(settings)))
    vector = embed([query])[0]
    found: list[Source] = []
    for datanet_id in datanet_ids:
        built = index_version(settings, datanet_id)
        if built is None:
            raise LookupError(f"datanet {datanet_id} has no retrieval index yet")
        if built.chunks == 0:
            continue
        table = db.open_table(table_name(datanet_id))
        hits = (table.search(query_type="hybrid").vector(vector).text(query).rerank(RRFReranker()).limit(k)
                .to_arrow().drop_columns(["vector"]).to_pylist())
        found += [Source(h["contribution_id"], h["datanet_id"], h["contributor"], h["chunk_id"],
                         h["dataset_version"], h["text"], float(h["_relevance_score"])) for h in hits]
    return sorted(found, key=lambda s: (-s.score, s.chunk_id))[:k]
