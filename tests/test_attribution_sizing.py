"""The memory bound of attribution: gradient batches sized from the model's shape within a stated budget."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pipelines.attribution.arguments import ScoreArguments
from pipelines.attribution.sizing import MAX_BATCH, ModelShape, estimated_bytes, gradient_batch, sized
from pipelines.attribution.task import LoRALanguageModelTask, Task
from pipelines.training.base_model import load_model
from pipelines.training.lora import attach_lora
from pipelines.training.train import resolved
from tests.attribution_fixtures import FAST

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
