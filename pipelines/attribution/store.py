"""The gradient store: each contribution's projected training gradients, kept so later queries need no recompute.

One Lance dataset per adapter, ``<adapter folder>/gradients.lance``, one row per contribution of the adapter's
dataset version: ``contribution_id``, ``adapter_id``, ``content_hash``, ``trained`` and ``features``, the
contribution's projected loss gradient (summed over its examples; a long text is several) at every checkpoint
side by side: ``checkpoints x width`` float32, where ``width`` is ``gradients.Layout`` (``projection_dim`` per
LoRA layer, LoGra/TRAK-style seeded random projection). TracIn's score of a contribution on a query is then one
dot product, ``features . concat_c(lr_c * q_c)``, so an eval set or a served answer is scored by a vector search
instead of a pass over the training data.

It is a projection, never a source of truth: it lives inside the adapter's folder (deleting or retraining
the adapter deletes it) and records the adapter's dataset fingerprint and the projection it was built with (a
query is projected the same way); :func:`open_store` refuses a store built for other weights or data, and
attribution (or the first query) rebuilds it from the adapter and its dataset version, themselves rebuilt from
the log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from pipelines.attribution.arguments import ScoreArguments
from pipelines.training.registry import AdapterRecord, AdapterRegistry

STORE_DIR = "gradients.lance"
EXACT_BELOW = 1 << 22
"""Stored floats (rows x width) below which a query is an exact scan; at or above, an IVF_PQ index. Measured
(``bench/scale.py``, 128-wide rows): an exact top-10 costs about 10 ms CPU at 10k rows (1.3M floats) and 90 ms
at 100k, so the index takes over near 4M floats, well inside the 50 ms goal either side."""
_META = b"payable.gradient_store"


@dataclass(frozen=True)
class StoreSpec:
    """What a store was built from; a query must project its gradients the same way."""

    adapter_id: str
    dataset_fingerprint: str
    projection_dim: int
    seed: int
    learning_rates: list[float]
    width: int
    """Projected columns per checkpoint (all layers side by side)."""
    feature_norm: float
    """Mean L2 norm of the stored features: queries are rescaled with it so dot products are O(1e4), far
    from the float32 resolution of Lance's ``1 - dot`` distance."""

    @property
    def dim(self) -> int:
        return len(self.learning_rates) * self.width

    def matches(self, record: AdapterRecord) -> bool:
        return (self.adapter_id, self.dataset_fingerprint) == (record.adapter_id, record.dataset_fingerprint)

    @property
    def arguments(self) -> ScoreArguments:
        """How a query must be projected to be compared with this store."""
        return ScoreArguments(method="tracin", projection_dim=self.projection_dim, seed=self.seed)


def store_uri(registry: AdapterRegistry, record: AdapterRecord) -> str:
    return str(registry.folder(record.datanet_id, record.adapter_id) / STORE_DIR)


def schema(spec: StoreSpec) -> pa.Schema:
    return pa.schema([
        pa.field("contribution_id", pa.int64(), nullable=False),
        pa.field("adapter_id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("trained", pa.bool_(), nullable=False),
        pa.field("features", pa.list_(pa.float32(), spec.dim), nullable=False),
    ], metadata={_META: json.dumps(asdict(spec)).encode()})


def contribution_features(example_grads: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, C * K) float32: example gradients (examples, C, K) summed per contribution (``owner[i]`` = row)."""
    out = np.zeros((n, *example_grads.shape[1:]))
    np.add.at(out, owner, example_grads.astype(np.float64))
    return out.reshape(n, -1).astype(np.float32)


def write_store(uri: str, spec: StoreSpec, ids: np.ndarray, content_hashes: list[str], trained: np.ndarray,
                features: np.ndarray) -> int:
    """Writes (replaces) the store, indexed when large enough; returns its size on disk in bytes."""
    n = len(ids)
    spec = StoreSpec(**{**asdict(spec), "feature_norm": float(np.linalg.norm(features, axis=1).mean()) or 1.0})
    table = pa.table({
        "contribution_id": pa.array(ids, pa.int64()), "adapter_id": [spec.adapter_id] * n,
        "content_hash": content_hashes, "trained": pa.array(trained, pa.bool_()),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1), pa.float32()), spec.dim),
    }, schema=schema(spec))
    ds = lance.write_dataset(table, uri, mode="overwrite", schema=table.schema)
    if n * spec.dim >= EXACT_BELOW:
        build_index(ds, n, spec.dim)
    return store_bytes(uri)


def build_index(ds: lance.LanceDataset, n: int, dim: int) -> None:
    """IVF_PQ on the dot product: about sqrt(n) partitions, 8-dimensional sub-vectors (or the widest divisor)."""
    sub = next(s for s in (dim // 8, dim // 4, dim // 2, dim) if s and dim % s == 0)
    ds.create_index("features", index_type="IVF_PQ", metric="dot", num_partitions=max(16, int(np.sqrt(n))),
                    num_sub_vectors=sub, replace=True)


def store_bytes(uri: str) -> int:
    return sum(f.stat().st_size for f in Path(uri).rglob("*") if f.is_file())


@dataclass(frozen=True)
class Hit:
    contribution_id: int
    score: float
    """TracIn influence (learning-rate-weighted gradient dot product summed over checkpoints), exact."""


class GradientStore:
    """Read side: top-k search for one preconditioned query, or full scores for an eval set."""

    def __init__(self, uri: str) -> None:
        self.ds = lance.dataset(uri)
        self.spec = StoreSpec(**json.loads(self.ds.schema.metadata[_META]))
        self.indexed = any("features" in i.field_names for i in self.ds.describe_indices())
        self._held_out = self.ds.count_rows("trained = false") > 0

    def __len__(self) -> int:
        return self.ds.count_rows()

    def search(self, query: np.ndarray, k: int, exact: bool | None = None, nprobes: int = 16,
               refine_factor: int = 160) -> list[Hit]:
        """Top-k trained contributions by ``features . query`` (query: (C * K,), already lr-weighted).

        Exact scan unless the store is indexed (``exact`` overrides); an indexed search re-ranks
        ``refine_factor * k`` PQ candidates on the stored vectors. The PQ ranking alone is too coarse
        (bench/scale.py, 16 probes, recall@10 at 1M rows: 0.24 with refine_factor 10, 0.58 with 40, 0.95 with
        130, 0.99 with 160 at 31 ms p99; more probes did not help), so the default refines widely."""
        norm = float(np.linalg.norm(query)) or 1.0
        scaled = (query * (1e4 / (norm * self.spec.feature_norm))).astype(np.float32)
        use_index = self.indexed if exact is None else not exact
        nearest = {"column": "features", "q": scaled, "k": k, "metric": "dot", "use_index": use_index}
        if use_index:
            nearest |= {"nprobes": nprobes, "refine_factor": refine_factor}
        found = self.ds.to_table(columns=["contribution_id", "features"], nearest=nearest,
                                 filter="trained = true" if self._held_out else None, prefilter=self._held_out,
                                 disable_scoring_autoprojection=True)
        feats = found["features"].combine_chunks().flatten().to_numpy().reshape(found.num_rows, -1)
        exact_scores = feats.astype(np.float64) @ query.astype(np.float64)
        hits = [Hit(int(c), float(s)) for c, s in zip(found["contribution_id"].to_pylist(), exact_scores, strict=True)]
        return sorted(hits, key=lambda h: (-h.score, h.contribution_id))

    def scores(self, queries: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """Every stored contribution's scores on ``queries`` (m, C * K): (rows without features, (n, m))."""
        table = self.ds.to_table().sort_by("contribution_id")
        feats = table["features"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
        return table.drop_columns(["features"]), feats.astype(np.float64) @ queries.astype(np.float64).T


def open_store(registry: AdapterRegistry, record: AdapterRecord) -> GradientStore | None:
    """The adapter's store, or ``None`` when missing or built for other weights or data."""
    uri = store_uri(registry, record)
    if not Path(uri).exists():
        return None
    store = GradientStore(uri)
    return store if store.spec.matches(record) else None


def save_gradients(registry: AdapterRegistry, record: AdapterRecord, args: ScoreArguments, contributions: pa.Table,
                   trained: np.ndarray, example_grads: np.ndarray, owner: np.ndarray) -> int:
    """Attribution's call: stores the TracIn train gradients it computed anyway (examples, C, K); returns bytes."""
    spec = StoreSpec(adapter_id=record.adapter_id, dataset_fingerprint=record.dataset_fingerprint,
                     projection_dim=args.projection_dim, seed=args.seed,
                     learning_rates=[c.learning_rate for c in record.checkpoints], width=example_grads.shape[2],
                     feature_norm=1.0)
    features = contribution_features(example_grads, owner, contributions.num_rows)
    return write_store(store_uri(registry, record), spec, contributions["contribution_id"].to_numpy(),
                       contributions["content_hash"].to_pylist(), trained, features)


def adapter_store_bytes(registry: AdapterRegistry, datanet_id: int, adapter_id: str) -> int:
    """Size on disk of an adapter's gradient store (0 when it has none), for run metadata."""
    uri = store_uri(registry, registry.record(datanet_id, adapter_id))
    return store_bytes(uri) if Path(uri).exists() else 0
