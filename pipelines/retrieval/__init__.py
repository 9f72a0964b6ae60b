"""Retrieval: each datanet's accepted contributions as a hybrid (vector + full-text) search index.

The index is a projection like every other (invariant 1): built from a datanet's newest Lance dataset
version minus the contributions whose stake was slashed on the log, so a rejected, retracted or slashed
contribution is never retrievable; an index version names the dataset version it covers.
"""

from pipelines.retrieval.chunking import Chunk, chunk_text
from pipelines.retrieval.index import IndexVersion, build_index, index_version
from pipelines.retrieval.search import Source, search

__all__ = ["Chunk", "IndexVersion", "Source", "build_index", "chunk_text", "index_version", "search"]
