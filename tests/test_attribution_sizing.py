"""The memory bound of attribution: gradient batches sized from the model's shape within a stated budget, and
overridden through the Dagster asset's config and the CLI."""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import lance
import numpy as np
import pytest
import torch

from assets.attribution import influence_scores
from orchestration.resources import DataDirResource, KafkaResource
from pipelines.attribution import attribute
from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.sizing import MAX_BATCH, ModelShape, estimated_bytes, gradient_batch, sized
from pipelines.attribution.synthetic import make_datanet
from pipelines.attribution.table import influence_uri
from pipelines.attribution.task import LoRALanguageModelTask, Task
from pipelines.training import train_latest
from pipelines.training.base_model import load_model
from pipelines.training.lora import attach_lora
from pipelines.training.train import resolved
from tests.attribution_fixtures import FAST, write_evals, write_version
from tests.conftest import make_settings
from tests.test_cli import run

SMOLLM2 = ModelShape(layers=30, hidden=576, intermediate=1536, heads=9, vocab=49152)
"""SmolLM2-135M-Instruct's config (its GGUF's metadata); its LoRA r=8 on every projection has 2,442,240 weights."""
SMOLLM2_LORA = 2_442_240
MB = 1 << 20


class _Shaped(Task):
    """A task with SmolLM2's estimate, without loading SmolLM2 (the rule, not the model, is under test)."""

    def params(self, checkpoint):
        raise NotImplementedError

    def example_loss(self, params, example):
        raise NotImplementedError

    def example_bytes(self, example):
        return estimated_bytes(SMOLLM2, example["input_ids"].shape[-1], SMOLLM2_LORA)


class _Unknown(_Shaped):
    def example_bytes(self, example):
        return None


def _examples(n: int, length: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.zeros((n, length), dtype=torch.long),
            "attention_mask": torch.ones((n, length), dtype=torch.long)}


def test_smollm2_batch_is_what_the_budget_holds_and_shrinks_with_length() -> None:
    args = ScoreArguments()
    sizes = {}
    for length in (16, 32, 48, 64):
        batch = gradient_batch(args, _Shaped(), _examples(3, length))
        assert not batch.chosen and batch.per_example is not None
        assert batch.size * batch.per_example <= args.memory_budget_mb * MB < (batch.size + 1) * batch.per_example
        sizes[length] = batch.size
    assert sizes[16] > sizes[32] > sizes[48] >= sizes[64] >= 1
    assert sizes[48] < 32  # the fixed 32 this replaced: 12.7 GB resident on SmolLM2 at 48 tokens
    half = gradient_batch(replace(args, memory_budget_mb=args.memory_budget_mb // 2), _Shaped(), _examples(3, 48))
    assert half.size == max(1, sizes[48] // 2)  # floor(floor(x) / 2) = floor(x / 2)
    assert "MB an example" in gradient_batch(args, _Shaped(), _examples(1, 48)).describe()


def test_estimate_grows_with_each_term() -> None:
    base = estimated_bytes(SMOLLM2, 48, SMOLLM2_LORA)
    assert estimated_bytes(SMOLLM2, 96, SMOLLM2_LORA) > 2 * base - estimated_bytes(SMOLLM2, 0, SMOLLM2_LORA)
    assert estimated_bytes(SMOLLM2, 48, 2 * SMOLLM2_LORA) > base
    assert estimated_bytes(replace(SMOLLM2, vocab=2 * SMOLLM2.vocab), 48, SMOLLM2_LORA) > base
    assert estimated_bytes(replace(SMOLLM2, layers=60), 48, 2 * SMOLLM2_LORA) > 1.7 * base  # twice the decoder


def test_explicit_batch_wins_and_the_floor_is_one() -> None:
    explicit = gradient_batch(ScoreArguments(batch_size=5), _Shaped(), _examples(2, 48))
    assert (explicit.size, explicit.chosen) == (5, True) and "set explicitly" in explicit.describe()
    assert sized(ScoreArguments(batch_size=5), _Shaped(), _examples(2, 48)).batch_size == 5
    assert gradient_batch(ScoreArguments(memory_budget_mb=1), _Shaped(), _examples(2, 48)).size == 1
    assert sized(ScoreArguments(), _Unknown(), _examples(2, 48)).batch_size == MAX_BATCH
    assert gradient_batch(ScoreArguments(), _Shaped(), _examples(0, 48)).size == MAX_BATCH  # nothing to estimate


def test_tiny_model_keeps_the_full_batch() -> None:
    args = resolved(FAST)
    task = LoRALanguageModelTask(attach_lora(load_model(args.base), args))
    batch = gradient_batch(ScoreArguments(), task, _examples(4, args.max_length))
    assert batch.size == MAX_BATCH and batch.per_example < ScoreArguments().memory_budget_mb * MB // MAX_BATCH
    shape = ModelShape.of(task.model.config)
    assert (shape.layers, shape.hidden, shape.intermediate) == (2, 128, 512)  # GPT-2's unset n_inner: 4 x hidden


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"memory_budget_mb": 0}])
def test_bad_sizes_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ScoreArguments(**bad)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A tiny datanet trained once, its default-batch scores, on the session's broker (the runs read its canaries)."""
    settings = make_settings(tmp_path_factory.mktemp("sizing") / "data")
    dn = make_datanet(contributors={"on_topic": 2, "off_topic": 1}, per_contributor=2, num_queries=4)
    write_version(settings, 1, dn.table)
    write_evals(settings, 1, dn.eval_texts)
    train_latest(settings, 1, FAST, show_progress=False)
    unmeasured = replace(ScoreArguments(), quality=replace(ScoreArguments().quality, lds_subsets=0))
    return settings, attribute(settings, 1, args=unmeasured, canaries_from_log=True)


def test_the_dagster_asset_takes_and_states_the_gradient_batch(trained) -> None:
    settings, default = trained
    assert default.batch.size == MAX_BATCH and not default.batch.chosen
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datanet", ["dn-1"])
    config = {"lds_subsets": 0, "gradient_batch": 3}
    result = dg.materialize([influence_scores], partition_key="dn-1", instance=instance,
                            run_config={"ops": {"influence_scores": {"config": config}}},
                            resources={"data_dir": DataDirResource(path=str(settings.data_dir)),
                                       "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap)})
    metadata = result.asset_materializations_for_node("influence_scores")[0].metadata
    assert metadata["gradient_batch_size"].value == 3 and "set explicitly" in metadata["gradient_batch"].value
    scored = lance.dataset(influence_uri(settings.lance_dir)).to_table().sort_by("contribution_id")
    np.testing.assert_allclose(scored["score"].to_numpy(), default.table.sort_by("contribution_id")["score"].to_numpy(),
                               rtol=1e-4, atol=1e-9, err_msg="the batch changes memory, not the scores")


def test_the_cli_takes_and_states_the_memory_budget(trained) -> None:
    settings, _ = trained
    out = run(settings, "attribute", "--datanet", "1", "--lds-subsets", "0", "--memory-budget-mb", "1").stderr
    assert "gradient batch: 1 example a batch (sized to the 1 MB budget)" in out
    bad = run(settings, "attribute", "--datanet", "1", "--gradient-batch", "0", ok=False)
    assert "Invalid value for '--gradient-batch'" in bad.stderr and "Traceback" not in bad.stderr
