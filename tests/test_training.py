"""LoRA training per dataset version: determinism, lineage, and no-op retraining."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines.attribution.synthetic import make_datanet, rows
from pipelines.training import AdapterRegistry, train_latest
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import base_model_hash
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version


def _datanet(tmp: Path, seed: int = 0):
    settings = settings_in(tmp)
    dn = make_datanet(seed=seed, contributors={"on_topic": 2, "off_topic": 1}, per_contributor=3)
    version = write_version(settings, 1, dn.table, offsets="facts:0-9")
    write_evals(settings, 1, dn.eval_texts[:6])
    return settings, dn, version


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_adapter_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first, second, third = (_datanet(tmp_path / name)[0] for name in ("a", "b", "c"))
    rec_a = train_latest(first, 1, FAST, show_progress=False)
    rec_b = train_latest(second, 1, FAST, show_progress=False)
    other = TrainingArguments(**{**FAST.__dict__, "seed": 1})
    rec_c = train_latest(third, 1, other, show_progress=False)
    files_a = _bytes(AdapterRegistry(first.adapters_dir).folder(1, rec_a.adapter_id))
    files_b = _bytes(AdapterRegistry(second.adapters_dir).folder(1, rec_b.adapter_id))
    files_c = _bytes(AdapterRegistry(third.adapters_dir).folder(1, rec_c.adapter_id))
    assert rec_a.adapter_id == rec_b.adapter_id
    lineage_a, lineage_b = (files.pop("lineage.json") for files in (files_a, files_b))
    assert files_a == files_b  # final adapter and every checkpoint, byte for byte
    assert lineage_a.replace(str(first.data_dir).encode(), b"") == lineage_b.replace(str(second.data_dir).encode(), b"")
    assert files_a["adapter.safetensors"] != files_c["adapter.safetensors"]


def test_lineage_records_inputs_and_metrics(tmp_path: Path) -> None:
    settings, _, version = _datanet(tmp_path)
    record = train_latest(settings, 1, FAST, show_progress=False)
    again = AdapterRegistry(settings.adapters_dir).record(1, record.adapter_id)
    assert again == record
    assert record.dataset_version == version
    assert record.offsets == {"offsets": "facts:0-9"}
    assert record.base_model["hash"] == base_model_hash(FAST.base)
    assert record.training_arguments == FAST.to_dict()
    assert record.eval_source == "stored" and record.num_eval_queries == 6
    assert len(record.checkpoints) == FAST.num_checkpoints
    assert len(record.loss_curve) == record.metrics["steps"]
    assert record.metrics["eval_loss"] < record.metrics["base_eval_loss"]


def test_train_latest_is_a_noop_until_the_data_changes(tmp_path: Path) -> None:
    settings, dn, _ = _datanet(tmp_path)
    first = train_latest(settings, 1, FAST, show_progress=False)
    assert train_latest(settings, 1, FAST, show_progress=False) is None
    write_version(settings, 1, dn.table, offsets="facts:0-10")  # a new version with the same rows
    assert train_latest(settings, 1, FAST, show_progress=False) is None
    grown = pa.concat_tables([dn.table, rows(1, [("0xnew", "stir the soup with fresh herbs .")], first_id=999)])
    write_version(settings, 1, grown, offsets="facts:0-11")
    second = train_latest(settings, 1, FAST, show_progress=False)
    assert second is not None and second.adapter_id != first.adapter_id
    assert AdapterRegistry(settings.adapters_dir).latest(1).adapter_id == second.adapter_id


def test_without_stored_eval_queries_a_stable_holdout_is_used(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    dn = make_datanet(contributors={"on_topic": 4}, per_contributor=5)
    write_version(settings, 2, dn.table)
    args = TrainingArguments(**{**FAST.__dict__, "eval_holdout_mod": 4})
    record = train_latest(settings, 2, args, show_progress=False)
    held = sum(int(h[:8], 16) % 4 == 0 for h in dn.table["content_hash"].to_pylist())
    assert record.eval_source == "holdout"
    assert record.num_eval_queries == held > 0
