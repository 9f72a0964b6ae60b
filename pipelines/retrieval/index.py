"""Building a datanet's retrieval index from its newest dataset version (a LanceDB table per datanet).

Rows are chunks of the version's accepted contributions, minus those whose stake the log says was
slashed (a penalty means the data must not earn again, from retrieval either). The table's name is the
datanet's, its rows carry the dataset version they came from, and a manifest beside it records which
dataset version and which slashed set the index covers, so ``build_index`` rebuilds only when either
moved and a reader can always tell what an answer was retrieved from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lance
import pyarrow as pa

from payable.settings import Settings
from pipelines import log_views
from pipelines.retrieval.chunking import chunk_text
from pipelines.retrieval.embed import DIMENSIONS, MODEL_NAME, embed
from pipelines.validate.materialize import dataset_uri

CHUNKS = pa.schema([
    pa.field("chunk_id", pa.string(), nullable=False),  # "<contribution id>:<chunk index>"
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("chunk_index", pa.int32(), nullable=False),
    pa.field("dataset_version", pa.int64(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("vector", pa.list_(pa.float32(), DIMENSIONS), nullable=False),
])


@dataclass(frozen=True)
class IndexVersion:
    """What one datanet's index covers: built from ``dataset_version`` without the ``slashed`` ids."""

    datanet_id: int
    dataset_version: int
    index_version: int  # the LanceDB table version holding these rows
    contributions: int
    chunks: int
    slashed_digest: str
    embedding_model: str = MODEL_NAME


def index_dir(settings: Settings) -> Path:
    return settings.lance_dir / "retrieval"


def table_name(datanet_id: int) -> str:
    return f"dn-{datanet_id}"


def index_version(settings: Settings, datanet_id: int) -> IndexVersion | None:
    """The manifest of the datanet's current index, or None before the first build."""
    path = _manifest(settings, datanet_id)
    return IndexVersion(**json.loads(path.read_text())) if path.exists() else None


def build_index(settings: Settings, datanet_id: int, *, slashed: set[int] | None = None) -> IndexVersion:
    """Indexes the datanet's newest dataset version; a no-op when neither it nor the slashed set moved."""
    import lancedb
    from lancedb.index import FTS

    try:
        dataset = lance.dataset(dataset_uri(settings.lance_dir, datanet_id))
    except (FileNotFoundError, ValueError, OSError):
        raise LookupError(f"datanet {datanet_id} has no dataset yet: validate its contributions first") from None
    slashed = log_views.slashed_contributions(settings.kafka_bootstrap) if slashed is None else slashed
    digest = "0x" + hashlib.sha256(json.dumps(sorted(slashed)).encode()).hexdigest()
    current = index_version(settings, datanet_id)
    if current is not None and (current.dataset_version, current.slashed_digest) == (dataset.version, digest):
        return current

    contributions = dataset.to_table(columns=["contribution_id", "datanet_id", "contributor", "content_hash",
                                              "text"]).sort_by("contribution_id").to_pylist()
    kept = [c for c in contributions if c["contribution_id"] not in slashed]
    rows = [{**{k: c[k] for k in ("contribution_id", "datanet_id", "contributor", "content_hash")},
             "chunk_id": f"{c['contribution_id']}:{chunk.index}", "chunk_index": chunk.index,
             "dataset_version": dataset.version, "text": chunk.text}
            for c in kept for chunk in chunk_text(c["text"])]
    vectors = embed([r["text"] for r in rows])
    table = pa.Table.from_pylist([{**r, "vector": v} for r, v in zip(rows, vectors.tolist(), strict=True)],
                                 schema=CHUNKS)
    db = lancedb.connect(str(index_dir(settings)))
    written = db.create_table(table_name(datanet_id), table, mode="overwrite")
    if len(table):
        written.create_index("text", config=FTS(), replace=True)
    built = IndexVersion(datanet_id, dataset.version, written.version, len(kept), len(rows), digest)
    _manifest(settings, datanet_id).write_text(json.dumps(asdict(built), indent=2) + "\n")
    return built


def _manifest(settings: Settings, datanet_id: int) -> Path:
    return index_dir(settings) / f"{table_name(datanet_id)}.manifest.json"
