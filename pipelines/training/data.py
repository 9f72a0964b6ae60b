"""From a Lance dataset version to tokenized examples, and the datanet's evaluation queries.

Evaluation queries, chosen per datanet in this order:
1. an eval set stored with the datanet: a Lance dataset ``<lance_dir>/evals/dn-<id>.lance`` with columns
   ``query_id`` (string) and ``text`` (string), written by the datanet's owner or operator
   (:func:`write_eval_queries`); every accepted contribution is then trained on;
2. otherwise a deterministic held-out split of the accepted contributions: those whose content hash (its
   first 32 bits after ``0x``) is 0 modulo ``eval_holdout_mod`` (:func:`held_out`). They are not trained on,
   are still scored (as the predicted effect of adding them), and a held-out contribution never counts as
   evidence about itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lance
import pyarrow as pa
import pyarrow.compute as pc

from payable.content_store import ContentStore
from payable.settings import Settings
from pipelines import log_views
from pipelines.validate import materialize
from schemas import events, topics
from schemas.datasets import CONTRIBUTION_ROW

if TYPE_CHECKING:  # torch and web3 load where needed: the no-op training path never imports them
    import torch
    from transformers import PreTrainedTokenizerBase

    from payable.datanets import DatanetSpec

EVAL_QUERY = pa.schema([
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
])


@dataclass(frozen=True)
class DatasetVersion:
    """One materialized version of a datanet's dataset: its rows and the offsets it says it covers."""

    uri: str
    version: int
    table: pa.Table
    offsets: dict[str, str]
    """The transaction properties the materializer committed with this version (e.g. Kafka offsets)."""


@dataclass(frozen=True)
class Examples:
    """Tokenized examples: ``input_ids``/``attention_mask`` are (n, max_length); ``owner`` maps each example
    to its row in the source table (a contribution, or an eval query)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    owner: torch.Tensor

    def __len__(self) -> int:
        return int(self.owner.shape[0])

    def batch(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        """The model inputs for the selected examples."""
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}


def eval_uri(lance_dir: Path, datanet_id: int) -> str:
    """Where a datanet's stored evaluation queries live."""
    return str(lance_dir / "evals" / f"dn-{datanet_id}.lance")


def dataset_of(lance_dir: Path, datanet_id: int) -> str:
    """The URI of a datanet's Lance dataset; FileNotFoundError at once when there is none (Lance itself would
    retry and then raise an error naming its Rust sources)."""
    uri = materialize.dataset_uri(lance_dir, datanet_id)
    if not Path(uri).exists():
        raise FileNotFoundError(f"datanet {datanet_id} has no dataset to train on: unknown datanet, or none of its "
                                "contributions has been validated yet (run `payable ingest` and `payable validate`)")
    return uri


def read_version(uri: str, version: int | None = None) -> DatasetVersion:
    """Reads one version (latest if ``None``), keeping only the contract columns, sorted by contribution id."""
    ds = lance.dataset(uri, version=version)
    table = ds.to_table(columns=CONTRIBUTION_ROW.names).cast(CONTRIBUTION_ROW).sort_by("contribution_id")
    transaction = ds.read_transaction(ds.version)
    offsets = dict(getattr(transaction, "transaction_properties", None) or {})
    return DatasetVersion(uri=uri, version=ds.version, table=table, offsets=offsets)


def fingerprint(table: pa.Table) -> str:
    """sha256 of (contribution id, content hash) pairs: equal for equal data, whatever the version number."""
    h = hashlib.sha256()
    for cid, chash in zip(table["contribution_id"].to_pylist(), table["content_hash"].to_pylist(), strict=True):
        h.update(f"{cid}:{chash};".encode())
    return h.hexdigest()


def fingerprint_queries(queries: pa.Table) -> str:
    """Fingerprint of an eval set (ids and text hashes)."""
    h = hashlib.sha256()
    for qid, text in zip(queries["query_id"].to_pylist(), queries["text"].to_pylist(), strict=True):
        h.update(f"{qid}:{hashlib.sha256(text.encode()).hexdigest()};".encode())
    return h.hexdigest()


def write_eval_queries(lance_dir: Path, datanet_id: int, texts: list[str]) -> str:
    """Stores a datanet's evaluation queries (ids are content hashes, so rewriting the same set is stable)."""
    ids = [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts]
    uri = eval_uri(lance_dir, datanet_id)
    mode = "overwrite" if Path(uri).exists() else "create"  # overwriting nothing makes Lance log a warning
    lance.write_dataset(pa.table({"query_id": ids, "text": texts}, schema=EVAL_QUERY), uri, mode=mode)
    return uri


def datanet_spec(settings: Settings, datanet_id: int) -> DatanetSpec | None:
    """The datanet's spec, named by its (unretracted) DatanetCreated fact on the log; None if none is known."""
    from payable.datanets import DatanetSpec

    facts = log_views.read_view(settings.kafka_bootstrap, topics.CHAIN_FACTS)
    retracted = {r["retracted_event_id"] for r in facts.of(events.FACT_RETRACTED)}
    created = [f for f in facts.of(events.DATANET_CREATED)
               if f["datanet_id"] == datanet_id and f["event_id"] not in retracted]
    if not created:
        return None
    return DatanetSpec.from_json(ContentStore(settings.content_dir).fetch(created[0]["metadata_uri"], 1 << 20))


def sync_eval_queries(settings: Settings, datanet_id: int, spec: DatanetSpec | None) -> str | None:
    """Materializes the eval queries of the datanet's spec into its Lance eval set; returns its URI, or None
    when the spec declares none. Rewrites only on change."""
    if spec is None or not spec.eval_queries:
        return None
    uri = eval_uri(settings.lance_dir, datanet_id)
    if Path(uri).exists() and lance.dataset(uri).to_table()["text"].to_pylist() == list(spec.eval_queries):
        return uri
    return write_eval_queries(settings.lance_dir, datanet_id, list(spec.eval_queries))


def held_out(content_hash: str, holdout_mod: int) -> bool:
    """Whether a contribution is an eval query of the holdout split: its hash's first 32 bits (after ``0x``)
    are 0 modulo ``holdout_mod``. A pure function of the content, so a contribution never changes side."""
    return int(content_hash.removeprefix("0x")[:8], 16) % holdout_mod == 0


def split_train_eval(table: pa.Table, lance_dir: Path, datanet_id: int, holdout_mod: int) -> tuple[pa.Table, pa.Table]:
    """Training rows and eval queries (``query_id``, ``text``) for a dataset version; see the module docstring."""
    stored = eval_uri(lance_dir, datanet_id)
    if Path(stored).exists():
        return table, lance.dataset(stored).to_table().cast(EVAL_QUERY)
    held = pa.array([held_out(h, holdout_mod) for h in table["content_hash"].to_pylist()], pa.bool_())
    if not pc.any(held).as_py():
        raise ValueError(f"datanet {datanet_id} has no stored eval queries and no contribution falls in the holdout")
    if pc.all(held).as_py():
        raise ValueError(f"datanet {datanet_id} has nothing to train on: all {table.num_rows} of its accepted "
                         "contributions are held out as eval queries (give the datanet eval_queries in its spec, "
                         "or wait for more contributions)")
    queries = table.filter(held)
    query_ids = [f"c{cid}" for cid in queries["contribution_id"].to_pylist()]
    return table.filter(pc.invert(held)), pa.table({"query_id": query_ids, "text": queries["text"]},
                                                            schema=EVAL_QUERY)


def tokenize(texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Examples:
    """Cuts each text into windows of ``max_length`` tokens (EOS-terminated); empty texts yield one EOS window.
    Padding (right side) is masked out of every loss."""
    import torch

    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    rows: list[list[int]] = []
    owners: list[int] = []
    for i, ids in enumerate(encoded):
        ids = [*ids, eos_id]
        for start in range(0, len(ids), max_length):
            window = ids[start:start + max_length]
            if len(window) < 2 and start > 0:
                continue
            rows.append(window)
            owners.append(i)
    input_ids = torch.full((len(rows), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    for r, window in enumerate(rows):
        input_ids[r, :len(window)] = torch.tensor(window)
        mask[r, :len(window)] = 1
    return Examples(input_ids=input_ids, attention_mask=mask, owner=torch.tensor(owners, dtype=torch.long))
