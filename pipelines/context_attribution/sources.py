"""The text of each retrieved source, rebuilt from the dataset version the retrieval index covered.

A usage event names each source by chunk id (``"<contribution id>:<chunk index>"``) and the dataset version
its index was built from. Lance versions are immutable, so re-chunking the contribution's text from that
version gives back exactly the chunk that was retrieved, even after the index moved on to a newer version
or dropped the contribution (a later slash must not rewrite what an earlier answer was shown).
"""

from __future__ import annotations

from collections.abc import Sequence

import lance

from pipelines.retrieval.chunking import chunk_text
from pipelines.validate.materialize import dataset_uri
from serving import rag


class UnknownChunk(LookupError):
    """A retrieved chunk that its dataset version does not hold."""


class ChunkTexts:
    """Chunk texts by (datanet, dataset version, chunk id), each dataset version's contributions read once."""

    def __init__(self, lance_dir: str) -> None:
        self.lance_dir = lance_dir
        self._chunks: dict[tuple[int, int], dict[str, str]] = {}

    def _version(self, datanet_id: int, version: int, contribution_ids: set[int]) -> dict[str, str]:
        key = (datanet_id, version)
        known = self._chunks.setdefault(key, {})
        wanted = contribution_ids - {int(c.split(":")[0]) for c in known}
        if wanted:
            try:
                dataset = lance.dataset(dataset_uri(self.lance_dir, datanet_id), version=version)
            except (FileNotFoundError, ValueError, OSError) as exc:
                raise UnknownChunk(f"datanet {datanet_id} has no dataset version {version}: {exc}") from None
            rows = dataset.to_table(columns=["contribution_id", "text"],
                                    filter=f"contribution_id IN ({', '.join(map(str, sorted(wanted)))})")
            for row in rows.to_pylist():
                for chunk in chunk_text(row["text"]):
                    known[f"{row['contribution_id']}:{chunk.index}"] = chunk.text
        return known

    def shown(self, sources: Sequence[dict], words: Sequence[int]) -> list[str]:
        """Each source's text as the prompt showed it (``words`` from the usage event's ``source_words``)."""
        texts = []
        for source, shown_words in zip(sources, words, strict=True):
            chunks = self._version(source["datanet_id"], source["dataset_version"], {source["contribution_id"]})
            if source["chunk_id"] not in chunks:
                raise UnknownChunk(f"chunk {source['chunk_id']} is not in datanet {source['datanet_id']}'s "
                                   f"dataset version {source['dataset_version']}")
            texts.append(rag.shown_text(chunks[source["chunk_id"]], shown_words))
        return texts
