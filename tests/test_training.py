"""LoRA training per dataset version: determinism, lineage, no-op retraining, the PEFT format, the holdout."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from pipelines.attribution.synthetic import make_datanet, rows
from pipelines.training import AdapterRegistry, load_adapter, locate_adapter, train_latest
from pipelines.training.arguments import TrainingArguments, resolve_arguments
from pipelines.training.base_model import base_model_hash, load_model
from pipelines.training.data import held_out
from pipelines.training.lora import attach_lora
from pipelines.training.registry import CONFIG_FILE, LEGACY_WEIGHTS_FILE, TIMING_FILE, WEIGHTS_FILE
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
    rec_a = train_latest(first, 1, FAST, show_progress=False).record
    rec_b = train_latest(second, 1, FAST, show_progress=False).record
    rec_c = train_latest(third, 1, replace(FAST, seed=1), show_progress=False).record
    files_a = _bytes(AdapterRegistry(first.adapters_dir).folder(1, rec_a.adapter_id))
    files_b = _bytes(AdapterRegistry(second.adapters_dir).folder(1, rec_b.adapter_id))
    files_c = _bytes(AdapterRegistry(third.adapters_dir).folder(1, rec_c.adapter_id))
    assert rec_a.adapter_id == rec_b.adapter_id
    lineage_a, lineage_b = (files.pop("lineage.json") for files in (files_a, files_b))
    for files in (files_a, files_b):
        files.pop(TIMING_FILE)  # wall seconds: a report, not lineage
    assert files_a == files_b  # PEFT folder and every checkpoint, byte for byte
    assert lineage_a.replace(str(first.data_dir).encode(), b"") == lineage_b.replace(str(second.data_dir).encode(), b"")
    assert files_a[WEIGHTS_FILE] != files_c[WEIGHTS_FILE]


def test_lineage_records_inputs_metrics_and_generations(tmp_path: Path) -> None:
    settings, _, version = _datanet(tmp_path)
    record = train_latest(settings, 1, FAST, show_progress=False).record
    again = AdapterRegistry(settings.adapters_dir).record(1, record.adapter_id)
    assert again == record
    assert record.dataset_version == version
    assert record.offsets == {"offsets": "facts:0-9"}
    assert record.base_model["hash"] == base_model_hash(FAST.base)
    assert record.base_model["name"] == "tiny-gpt2" and record.base_model["architecture"] == "gpt2"
    assert record.training_arguments == replace(FAST, target_modules=("c_attn", "c_proj")).to_dict()
    assert record.eval_source == "stored" and record.num_eval_queries == 6
    assert len(record.checkpoints) == FAST.num_checkpoints
    assert len(record.loss_curve) == record.metrics["steps"]
    assert record.metrics["eval_loss"] < record.metrics["base_eval_loss"]
    assert record.metrics["eval_perplexity"] < record.metrics["base_eval_perplexity"]
    assert len(record.generations) == 3
    assert all(set(g) == {"prompt", "reference", "base", "tuned"} for g in record.generations)
    assert any(g["base"] != g["tuned"] for g in record.generations)


def test_adapter_folder_round_trips_through_plain_peft(tmp_path: Path) -> None:
    settings, _, _ = _datanet(tmp_path)
    trained = train_latest(settings, 1, FAST, show_progress=False).record
    where = locate_adapter(settings.adapters_dir, trained.adapter_id)
    assert (where.folder / CONFIG_FILE).exists() and (where.folder / WEIGHTS_FILE).exists()
    assert json.loads((where.folder / CONFIG_FILE).read_text())["base_model_name_or_path"] == "tiny-gpt2"
    assert where.lineage["adapter_id"] == trained.adapter_id and where.base == FAST.base
    model = PeftModel.from_pretrained(load_model(where.base), str(where.folder)).eval()
    base = load_model(where.base).eval()
    batch = {"input_ids": torch.tensor([[5, 17, 42, 99, 3, 250]]), "attention_mask": torch.ones(1, 6, dtype=torch.long)}
    # the trained model itself: the same adapter applied by hand from the final checkpoint the registry kept
    again = attach_lora(load_model(where.base), replace(FAST, target_modules=("c_attn", "c_proj")))
    set_peft_model_state_dict(again, AdapterRegistry(settings.adapters_dir).checkpoint_weights(trained)[-1])
    with torch.no_grad():
        tuned_logits, base_logits = model(**batch).logits, base(**batch).logits
        expected = again.eval()(**batch).logits
    assert torch.equal(tuned_logits, expected)
    assert not torch.allclose(tuned_logits, base_logits)


def test_a_registry_of_the_earlier_layout_is_migrated_and_loads(tmp_path: Path) -> None:
    settings, _, _ = _datanet(tmp_path)
    record = train_latest(settings, 1, FAST, show_progress=False).record
    registry = AdapterRegistry(settings.adapters_dir)
    folder = registry.folder(1, record.adapter_id)
    expected = (folder / WEIGHTS_FILE).read_bytes()
    # rewrite the folder as the earlier code did: adapter.safetensors without metadata, no adapter_config.json
    save_file(load_file(str(folder / WEIGHTS_FILE)), str(folder / LEGACY_WEIGHTS_FILE))
    for name in (WEIGHTS_FILE, CONFIG_FILE, "README.md"):
        (folder / name).unlink()
    doc = json.loads((folder / "lineage.json").read_text())
    doc.pop("generations")
    doc["weights_file"] = LEGACY_WEIGHTS_FILE
    doc["base_model"] = {k: doc["base_model"][k] for k in ("name", "hash", "spec")}
    (folder / "lineage.json").write_text(json.dumps(doc))
    assert registry.latest(1).adapter_id == record.adapter_id
    assert not (folder / LEGACY_WEIGHTS_FILE).exists()
    assert (folder / WEIGHTS_FILE).read_bytes() == expected
    model, checkpoints = load_adapter(registry, registry.record(1, record.adapter_id))
    assert len(checkpoints) == FAST.num_checkpoints and isinstance(model, PeftModel)


def test_train_latest_is_a_noop_until_the_data_or_the_settings_change(tmp_path: Path) -> None:
    settings, dn, _ = _datanet(tmp_path)
    first = train_latest(settings, 1, FAST, show_progress=False)
    again = train_latest(settings, 1, FAST, show_progress=False)
    assert first.trained_now and not again.trained_now and again.record == first.record
    write_version(settings, 1, dn.table, offsets="facts:0-10")  # a new version with the same rows
    assert not train_latest(settings, 1, FAST, show_progress=False).trained_now
    grown = pa.concat_tables([dn.table, rows(1, [("0xnew", "stir the soup with fresh herbs .")], first_id=999)])
    write_version(settings, 1, grown, offsets="facts:0-11")
    second = train_latest(settings, 1, FAST, show_progress=False)
    assert second.trained_now and second.record.adapter_id != first.record.adapter_id
    assert AdapterRegistry(settings.adapters_dir).latest(1).adapter_id == second.record.adapter_id
    other = train_latest(settings, 1, replace(FAST, lora_r=4), show_progress=False)
    assert other.trained_now and other.record.adapter_id != second.record.adapter_id


def test_without_stored_eval_queries_a_stable_holdout_is_used(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    dn = make_datanet(contributors={"on_topic": 4}, per_contributor=5)
    write_version(settings, 2, dn.table)
    args = replace(FAST, eval_holdout_mod=4)
    record = train_latest(settings, 2, args, show_progress=False).record
    held = sum(int(h.removeprefix("0x")[:8], 16) % 4 == 0 for h in dn.table["content_hash"].to_pylist())
    assert record.eval_source == "holdout"
    assert record.num_eval_queries == held > 0


def test_holdout_bucket_reads_32_bits_after_the_0x_prefix() -> None:
    # 0x0000000f...: its first 32 bits are 15, not the 24 bits after "0x" that int("0x000000", 16) read
    assert held_out("0x0000000f" + "0" * 56, 5)
    assert not held_out("0x0000000f" + "0" * 56, 2)
    assert held_out("0x00000010" + "0" * 56, 16)


def test_a_datanet_whose_only_contribution_is_held_out_fails_with_a_reason(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    dn = make_datanet(contributors={"on_topic": 1}, per_contributor=1)
    write_version(settings, 3, dn.table)
    with pytest.raises(ValueError, match="nothing to train on: all 1 of its accepted contributions are held out"):
        train_latest(settings, 3, replace(FAST, eval_holdout_mod=1), show_progress=False)


def test_an_unknown_datanet_fails_at_once_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datanet 7 has no dataset to train on") as info:
        train_latest(settings_in(tmp_path), 7, FAST, show_progress=False)
    assert "\n" not in str(info.value)


def test_settings_layer_defaults_spec_then_overrides() -> None:
    spec_defaults = {"base_model": "tiny-gpt2", "epochs": 2, "lora_r": 4}
    args = resolve_arguments(spec_defaults, {"epochs": 3, "seed": None, "target_modules": ["c_attn"]})
    assert (args.epochs, args.lora_r, args.seed, args.target_modules) == (3, 4, 0, ("c_attn",))
    with pytest.raises(ValueError, match="unknown training setting 'epoch'"):
        resolve_arguments({"epoch": 2})
    with pytest.raises(ValueError, match="quantization must be one of"):
        resolve_arguments({"quantization": "8bit"})
    assert TrainingArguments.from_dict(args.to_dict()) == args
