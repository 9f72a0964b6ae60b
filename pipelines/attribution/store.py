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

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
from threadpoolctl import ThreadpoolController

from pipelines.attribution.arguments import ScoreArguments
from pipelines.training.registry import AdapterRecord, AdapterRegistry

STORE_DIR = "gradients.lance"
EXACT_BELOW = 1 << 22
"""Floats a search scans (rows x the width it reads) below which it is a flat scan; at or above, an index.
Measured (``bench/scale.py``, 128-wide rows): a flat top-10 costs about 10 ms CPU at 10k rows (1.3M floats)
and 90 ms at 100k, so the index takes over near 4M floats, inside the 50 ms goal either side. It counts the
floats of the column searched, so the row threshold depends on the width: a real store's full features
(4,608 wide) are scanned exactly below about 900 rows, its serving column (256 wide) below about 16k, and
only above that is an index built (on the serving column: one on the full width was slower and worse,
recall@10 0.49 at 10k rows)."""
SERVING_WIDTH = 256
"""Width of the ``serving`` column searched for candidates when the features are wider: a seeded Gaussian
projection of them (Johnson-Lindenstrauss: dot products kept up to about ``|f| |q| / sqrt(256)``), re-ranked
exactly on the full features. 256 because at 64 and 128 the true top-10 fell outside 200 candidates more
often (recall@10 0.92 and 0.98 on the real 2k store, against 0.99 at 256), while the index's cost grows with
the width."""
CANDIDATES_PER_HIT = 20
"""Candidates the serving search returns per requested hit, all re-ranked on the full features: 200 for a
top-10 (bench/scale.py, 10k real-like rows 4,608 wide: recall@10 against the exact full-width scan 0.993, p99
39 ms; at 30k 0.962; on the real 2k store the true top-10 lay inside the projection's top 200 for 0.99 of hits, top 100
for 0.98)."""
_META = b"payable.gradient_store"
_BLAS = ThreadpoolController()
"""A search's products are small (200 x 4,608): on a busy machine OpenBLAS's threads made them 10-20x slower
than one thread (bench/scale.py: 14 ms of a 36 ms search), so the search runs them on one."""
_META = b"payable.gradient_store"
_BLAS = ThreadpoolController()
"""A search's products are small (200 x 4,608): on a busy machine OpenBLAS's threads made them 10-20x slower
than one thread (bench/scale.py: 14 ms of a 36 ms search), so the search runs them on one."""


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
    weights: str = ""
    """:func:`weights_fingerprint` of the checkpoints the gradients were taken at ("" in stores written before
    it existed: never reused). A gradient depends only on the text and these weights, not on the adapter id."""
    serving_width: int = 0
    """Width of the ``serving`` column (0: none, the features are searched directly: they are at most
    :data:`SERVING_WIDTH` wide, or the store predates the column)."""

    @property
    def dim(self) -> int:
        return len(self.learning_rates) * self.width

    @property
    def search_column(self) -> str:
        return "serving" if self.serving_width else "features"

    @property
    def search_width(self) -> int:
        return self.serving_width or self.dim

    def matches(self, record: AdapterRecord) -> bool:
        return (self.adapter_id, self.dataset_fingerprint) == (record.adapter_id, record.dataset_fingerprint)

    @property
    def arguments(self) -> ScoreArguments:
        """How a query must be projected to be compared with this store."""
        return ScoreArguments(method="tracin", projection_dim=self.projection_dim, seed=self.seed)


def weights_fingerprint(checkpoints: list[dict]) -> str:
    """sha256 of the checkpoints' tensors (names, shapes, dtypes, bytes), in trajectory order."""
    h = hashlib.sha256()
    for state in checkpoints:
        for name in sorted(state):
            value = state[name].detach().cpu().contiguous().numpy()
            h.update(f"{name}|{value.dtype}|{value.shape}|".encode())
            h.update(value.tobytes())
    return h.hexdigest()


def store_uri(registry: AdapterRegistry, record: AdapterRecord) -> str:
    return str(registry.folder(record.datanet_id, record.adapter_id) / STORE_DIR)


def schema(spec: StoreSpec) -> pa.Schema:
    serving = [pa.field("serving", pa.list_(pa.float32(), spec.serving_width), nullable=False)]
    return pa.schema([
        pa.field("contribution_id", pa.int64(), nullable=False),
        pa.field("adapter_id", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("trained", pa.bool_(), nullable=False),
        pa.field("features", pa.list_(pa.float32(), spec.dim), nullable=False),
        *(serving if spec.serving_width else []),
    ], metadata={_META: json.dumps(asdict(spec)).encode()})


@lru_cache(maxsize=4)
def serving_projection(dim: int, width: int) -> np.ndarray:
    """(dim, width) float32 Gaussian / sqrt(width): the same for every store of this width (a fixed seed), so a
    query is projected without reading anything but the spec, and a rebuilt store gets the same column."""
    rng = np.random.default_rng([dim, width])
    return (rng.standard_normal((dim, width), dtype=np.float32) / np.float32(np.sqrt(width)))


_SUM_ROWS = 8192  # examples summed at once: bounds the float64 temporaries (8192 x 4,608 x 8 B = 300 MB)


def contribution_features(example_grads: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, C * K) float32: example gradients (examples, C, K) summed per contribution (``owner[i]`` = row).

    Summed in float64 a block of examples at a time: at 100k contributions a whole float64 copy of the
    gradients would be 3.7 GB. ``owner`` is non-decreasing (``tokenize`` emits a text's windows in order), so a
    block covers a short run of contributions; one that straddles two blocks gets two float32 partial sums."""
    flat = example_grads.reshape(len(owner), int(np.prod(example_grads.shape[1:])))
    out = np.zeros((n, flat.shape[1]), dtype=np.float32)
    for start in range(0, len(owner), _SUM_ROWS):
        rows = owner[start:start + _SUM_ROWS]
        low, high = int(rows.min()), int(rows.max()) + 1
        block = np.zeros((high - low, flat.shape[1]))
        np.add.at(block, rows - low, flat[start:start + _SUM_ROWS].astype(np.float64))
        out[low:high] += block.astype(np.float32)
    return out


def write_store(uri: str, spec: StoreSpec, ids: np.ndarray, content_hashes: list[str], trained: np.ndarray,
                features: np.ndarray) -> int:
    """Writes (replaces) the store, indexed when large enough; returns its size on disk in bytes."""
    n = len(ids)
    spec = StoreSpec(**{**asdict(spec), "feature_norm": float(np.linalg.norm(features, axis=1).mean()) or 1.0,
                        "serving_width": SERVING_WIDTH if spec.dim > SERVING_WIDTH else 0})
    columns = {
        "contribution_id": pa.array(ids, pa.int64()), "adapter_id": [spec.adapter_id] * n,
        "content_hash": content_hashes, "trained": pa.array(trained, pa.bool_()),
        "features": vectors(features),
    }
    if spec.serving_width:
        columns["serving"] = vectors(features @ serving_projection(spec.dim, spec.serving_width))
    table = pa.table(columns, schema=schema(spec))
    ds = lance.write_dataset(table, uri, mode="overwrite", schema=table.schema)
    if n * spec.search_width >= EXACT_BELOW:
        build_index(ds)
    return store_bytes(uri)


def vectors(rows: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), rows.shape[1])


def build_index(ds: lance.LanceDataset) -> None:
    """IVF_PQ on the dot product over the store's search column: about sqrt(n) partitions, 8-dimensional
    sub-vectors (or the widest divisor)."""
    spec = StoreSpec(**json.loads(ds.schema.metadata[_META]))
    dim = spec.search_width
    sub = next(s for s in (dim // 8, dim // 4, dim // 2, dim) if s and dim % s == 0)
    ds.create_index(spec.search_column, index_type="IVF_PQ", metric="dot",
                    num_partitions=index_partitions(ds.count_rows()), num_sub_vectors=sub, replace=True)


def index_partitions(rows: int) -> int:
    return max(16, int(np.sqrt(rows)))


def default_nprobes(rows: int) -> int:
    """Partitions a search probes: an eighth of them, at least 32. A fixed count probes an ever smaller share
    as the store grows (bench/scale.py, 1M rows 256 wide, refine 8: 32 probes found 0.74 of the top-10, 128
    found 0.94 at p99 35 ms; at 30k rows 32 probes of 173 found 0.96)."""
    return max(32, index_partitions(rows) // 8)


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
        column = self.spec.search_column
        self.indexed = any(column in i.field_names for i in self.ds.describe_indices())
        self._held_out = self.ds.count_rows("trained = false") > 0
        self._exact = not self.indexed and self.ds.count_rows() * self.spec.dim < EXACT_BELOW

    def __len__(self) -> int:
        return self.ds.count_rows()

    def search(self, query: np.ndarray, k: int, exact: bool | None = None, nprobes: int | None = None,
               refine_factor: int = 8) -> list[Hit]:
        """Top-k trained contributions by ``features . query`` (query: (C * K,), already lr-weighted).

        Exact (a flat scan of the full features) while they hold fewer than :data:`EXACT_BELOW` floats
        (``exact`` overrides). Otherwise ``CANDIDATES_PER_HIT * k`` candidates from the search column (the
        narrower serving projection, or the features when they are narrow), re-ranked exactly on the full
        features. The candidates are the best on the search column, held in memory (1 GB at 1M rows 256
        wide): of every row while the column is small, else of the ``refine_factor`` times as many rows the
        column's IVF_PQ index ranks first. The PQ ranking alone is too coarse (bench/scale.py, recall@10 at
        1M rows 128 wide: 0.24 re-ranking 100 vectors, 0.99 re-ranking 1,600), and Lance's own
        ``refine_factor`` re-reads those 1,600 rows from disk (30 ms of a 49 ms search at 30k rows), hence
        the column in memory. ``nprobes`` defaults to :func:`default_nprobes` of the store's size."""
        with _BLAS.limit(limits=1, user_api="blas"):
            if self._exact if exact is None else exact:
                return self._exact_search(query, k)
            return self._candidate_search(query, k, nprobes or default_nprobes(len(self)), refine_factor)

    def _scaled(self, query: np.ndarray) -> np.ndarray:
        """The query at the stored features' scale, so Lance's float32 distances keep their resolution."""
        norm = float(np.linalg.norm(query)) or 1.0
        return (query * (1e4 / (norm * self.spec.feature_norm))).astype(np.float32)

    def _exact_search(self, query: np.ndarray, k: int) -> list[Hit]:
        nearest = {"column": "features", "q": self._scaled(query), "k": k, "metric": "dot", "use_index": False}
        found = self.ds.to_table(columns=["contribution_id", "features"], nearest=nearest,
                                 filter="trained = true" if self._held_out else None, prefilter=self._held_out,
                                 disable_scoring_autoprojection=True)
        return _ranked(query, found["contribution_id"].to_numpy(), _matrix(found["features"]), k)

    def _candidate_search(self, query: np.ndarray, k: int, nprobes: int, refine_factor: int) -> list[Hit]:
        column = self._column
        projected = self._scaled(query)
        if self.spec.serving_width:
            projected = projected @ serving_projection(self.spec.dim, self.spec.serving_width)
        wanted = CANDIDATES_PER_HIT * k
        if self.indexed:
            nearest = {"column": self.spec.search_column, "q": projected, "k": wanted * refine_factor,
                       "metric": "dot", "nprobes": nprobes}
            found = self.ds.to_table(columns=["contribution_id"], nearest=nearest,
                                     filter="trained = true" if self._held_out else None,
                                     prefilter=self._held_out, disable_scoring_autoprojection=True)
            rows = column.offsets(found["contribution_id"].to_numpy())
            scores = column.vectors[rows] @ projected
        else:
            rows = np.flatnonzero(column.trained)
            scores = (column.vectors @ projected)[rows]
        if len(rows) > wanted:
            rows = rows[np.argpartition(-scores, wanted)[:wanted]]
        if not self.spec.serving_width:  # the search column is the features
            return _ranked(query, column.ids[rows], column.vectors[rows], k)
        full = self.ds.take(np.sort(rows), columns=["contribution_id", "features"])
        return _ranked(query, full["contribution_id"].to_numpy(), _matrix(full["features"]), k)

    @cached_property
    def _column(self) -> _SearchColumn:
        table = self.ds.to_table(columns=["contribution_id", "trained", self.spec.search_column])
        ids = table["contribution_id"].to_numpy()
        return _SearchColumn(ids, np.argsort(ids), _matrix(table[self.spec.search_column]),
                             table["trained"].to_numpy(zero_copy_only=False))

    def scores(self, queries: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """Every stored contribution's scores on ``queries`` (m, C * K): (rows without features, (n, m))."""
        table = self.ds.to_table(columns=["contribution_id", "adapter_id", "content_hash", "trained", "features"])
        table = table.sort_by("contribution_id")
        return table.drop_columns(["features"]), _matrix(table["features"]).astype(np.float64) @ queries.astype(
            np.float64).T


@dataclass(frozen=True)
class _SearchColumn:
    """A store's search column in memory, in dataset order (a row's offset is its index here)."""

    ids: np.ndarray
    order: np.ndarray
    """Offsets sorting ``ids``."""
    vectors: np.ndarray
    trained: np.ndarray

    def offsets(self, contribution_ids: np.ndarray) -> np.ndarray:
        return self.order[np.searchsorted(self.ids, contribution_ids, sorter=self.order)]


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy()
    return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)


def _ranked(query: np.ndarray, ids: np.ndarray, features: np.ndarray, k: int) -> list[Hit]:
    """The k best of these rows by their exact float64 score, best first (ties: the lower id)."""
    if len(ids) > k:  # picked in float32 first: a float64 copy of 200 full rows costs ~10 ms
        keep = np.argpartition(-(features @ query.astype(np.float32)), k)[:k]
        ids, features = ids[keep], features[keep]
    scores = features.astype(np.float64) @ query.astype(np.float64)
    return sorted((Hit(int(c), float(s)) for c, s in zip(ids, scores, strict=True)),
                  key=lambda h: (-h.score, h.contribution_id))


def open_store(registry: AdapterRegistry, record: AdapterRecord) -> GradientStore | None:
    """The adapter's store, or ``None`` when missing or built for other weights or data."""
    uri = store_uri(registry, record)
    if not Path(uri).exists():
        return None
    store = GradientStore(uri)
    return store if store.spec.matches(record) else None


@dataclass(frozen=True)
class GradientReport:
    """What an attribution run did with training gradients, in contributions, and why (run output, metadata)."""

    recomputed: int
    reused: int
    why: str

    def describe(self) -> str:
        return f"recomputed: {self.recomputed}, reused: {self.reused}, why: {self.why}"


@dataclass(frozen=True)
class Reuse:
    """Stored features valid for this run: ``features[i]`` for each contribution row with ``found[i]``."""

    features: np.ndarray
    """(n, C * K) float32, zero where not found."""
    found: np.ndarray
    source: str | None
    """The adapter whose store they come from (None: nothing reusable)."""
    why: str


def reusable_gradients(registry: AdapterRegistry, record: AdapterRecord, args: ScoreArguments, weights: str,
                       contributions: pa.Table, dim: int) -> Reuse:
    """The features already stored for these contributions at exactly these checkpoint weights.

    A stored gradient stays valid while the weights it was taken at and the text are unchanged, so the search
    is content-addressed: the adapter's own store first, then any of the datanet's adapters with the same
    weights fingerprint and projection (a new eval set or held-out contributions change the adapter id but not
    the trained weights). A dataset version that adds training contributions is trained from the base model
    again (no warm start), so all its checkpoints differ and nothing is reusable: every gradient is stale."""
    n = contributions.num_rows
    none = np.zeros(n, dtype=bool)
    others = [r for r in registry.records(record.datanet_id) if r.adapter_id != record.adapter_id]
    uris = [u for u in (store_uri(registry, r) for r in [record, *others]) if Path(u).exists()]
    stores = [GradientStore(u) for u in uris]
    at_weights = [s for s in stores if s.spec.weights == weights]
    same = next((s for s in at_weights if (s.spec.projection_dim, s.spec.seed, s.spec.dim)
                 == (args.projection_dim, args.seed, dim)), None)
    if same is None:
        why = ("the datanet has no gradient store yet" if not stores else
               "the gradients stored at these checkpoint weights use another projection (projection_dim or "
               "seed)" if at_weights else
               "no gradient store of this datanet was taken at these checkpoint weights: each dataset version "
               "that changes the training rows is trained from the base model (no warm start), so every "
               "checkpoint's gradients are new")
        return Reuse(np.zeros((n, dim), dtype=np.float32), none, None, why)
    table = same.ds.to_table(columns=["content_hash", "features"])
    row_of = {h: i for i, h in enumerate(table["content_hash"].to_pylist())}
    index = np.array([row_of.get(h, -1) for h in contributions["content_hash"].to_pylist()], dtype=np.int64)
    found = index >= 0
    stored = table["features"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    features = np.zeros((n, dim), dtype=np.float32)
    features[found] = stored[index[found]]
    own = "its own" if same.spec.adapter_id == record.adapter_id else f"adapter {same.spec.adapter_id}'s"
    why = (f"{own} gradient store was taken at the same checkpoint weights: stored contents reused, "
           f"{int((~found).sum())} contents it lacks computed")
    return Reuse(features, found, same.spec.adapter_id, why)


def save_gradients(registry: AdapterRegistry, record: AdapterRecord, args: ScoreArguments, contributions: pa.Table,
                   trained: np.ndarray, features: np.ndarray, width: int, weights: str) -> int:
    """Attribution's call: stores every contribution's TracIn features (n, C * K), computed or reused; returns
    bytes."""
    spec = StoreSpec(adapter_id=record.adapter_id, dataset_fingerprint=record.dataset_fingerprint,
                     projection_dim=args.projection_dim, seed=args.seed,
                     learning_rates=[c.learning_rate for c in record.checkpoints], width=width,
                     feature_norm=1.0, weights=weights)
    return write_store(store_uri(registry, record), spec, contributions["contribution_id"].to_numpy(),
                       contributions["content_hash"].to_pylist(), trained, features)


def adapter_store_bytes(registry: AdapterRegistry, datanet_id: int, adapter_id: str) -> int:
    """Size on disk of an adapter's gradient store (0 when it has none), for run metadata."""
    uri = store_uri(registry, registry.record(datanet_id, adapter_id))
    return store_bytes(uri) if Path(uri).exists() else 0
