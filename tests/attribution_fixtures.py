"""Shared helpers for the training and attribution tests: small Lance datanets in a temporary data dir."""

from __future__ import annotations

from pathlib import Path

import lance
import pyarrow as pa

from payable.settings import Settings
from pipelines.training.arguments import TrainingArguments
from pipelines.training.data import write_eval_queries
from pipelines.validate import materialize

FAST = TrainingArguments(epochs=4, batch_size=8, max_length=48, num_checkpoints=2)


def settings_in(tmp: Path) -> Settings:
    return Settings.from_env(tmp)


def write_version(settings: Settings, datanet_id: int, table: pa.Table, offsets: str = "0-1") -> int:
    """Materializes ``table`` as a new version of the datanet's dataset, as the materializer would."""
    uri = materialize.dataset_uri(settings.lance_dir, datanet_id)
    mode = "overwrite" if Path(uri).exists() else "create"
    ds = lance.write_dataset(table, uri, mode=mode, transaction_properties={"offsets": offsets})
    return ds.version


def write_evals(settings: Settings, datanet_id: int, texts: list[str]) -> None:
    write_eval_queries(settings.lance_dir, datanet_id, texts)
