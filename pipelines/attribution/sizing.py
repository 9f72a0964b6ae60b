"""The memory bound of attribution: how many examples one per-example-gradient batch holds.

``vmap(grad(loss))`` over a batch keeps, for every example at once, the activations its backward pass needs and the
example's gradient of every attributed weight. On a real model that, not the weights, is what fills memory: on
SmolLM2-135M the fixed 32 examples of 48 tokens this replaced took the demo's process to 12.7 GB resident. So a
batch holds as many examples as fit a stated budget (``ScoreArguments.memory_budget_mb``), by an estimate from the
model's shape, for examples of ``L`` tokens (``Task.example_bytes``):

    bytes per example = KAPPA x 4 x ( L x (layers x (25 hidden + 9 intermediate) + 3 vocab)
                                      + 3 x layers x heads x L^2 + 2 x attributed weights )

The terms count the float32 tensors a decoder layer saves for backward (norms, projections with their LoRA paths,
rotary copies, attention in and out, the MLP's gate/up/activation/product), the logits' softmax and its gradient,
and the per-example gradient with its flattened copy for the projection. In a fresh process the count matches the
marginal peak growth of an example (``bench/gradient_memory.py``: 0.93 of it on SmolLM2 at 48 and 32 tokens); a
long-running process keeps more (the demo's reached 1.46x the count at 32 examples), so ``KAPPA`` is 1.5.
A task that cannot estimate (a model without a transformer config) gets :data:`MAX_BATCH`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pipelines.attribution.arguments import ScoreArguments

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from pipelines.attribution.task import Example, Task

MAX_BATCH = 32
"""The largest batch (the old fixed size): past it a CPU gains nothing, and the tiny model always gets it."""
KAPPA = 1.5
"""Peak resident growth over the counted bytes, as a long-running process sees it (bench/README.md)."""
_MB = 1 << 20


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that its activations scale with."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> ModelShape:
        """From a Hugging Face config (GPT-2's ``n_inner`` unset means 4 x hidden, as GPT-2 builds it)."""
        intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
        return cls(layers=config.num_hidden_layers, hidden=config.hidden_size,
                   intermediate=intermediate or 4 * config.hidden_size, heads=config.num_attention_heads,
                   vocab=config.vocab_size)


def estimated_bytes(shape: ModelShape, length: int, attributed: int) -> int:
    """Estimated peak bytes one example of ``length`` tokens adds to a gradient batch (``attributed``: the number of
    weights whose gradient is taken)."""
    per_token = shape.layers * (25 * shape.hidden + 9 * shape.intermediate) + 3 * shape.vocab
    floats = length * per_token + 3 * shape.layers * shape.heads * length**2 + 2 * attributed
    return int(KAPPA * 4 * floats)


@dataclass(frozen=True)
class GradientBatch:
    """A run's gradient batch and the estimate behind it (``per_example`` None: the task has no estimate)."""

    size: int
    per_example: int | None
    budget_mb: int
    chosen: bool
    """True when ``size`` was set explicitly (``ScoreArguments.batch_size``) rather than derived."""

    def describe(self) -> str:
        """What the run's output and metadata say about its memory bound."""
        how = "set explicitly" if self.chosen else f"sized to the {self.budget_mb:,} MB budget"
        examples = f"{self.size} example{'' if self.size == 1 else 's'} a batch"
        if self.per_example is None:
            return f"{examples} ({how}; no memory estimate for this model)"
        return (f"{examples} ({how}): about {self.size * self.per_example / _MB:,.0f} MB of "
                f"gradient memory estimated, {self.per_example / _MB:,.1f} MB an example")


def gradient_batch(args: ScoreArguments, task: Task, examples: Example) -> GradientBatch:
    """The batch for ``examples`` (batched tensors; every example padded alike): ``args.batch_size`` when set,
    else as many as ``args.memory_budget_mb`` holds by the task's estimate for one of them (at least 1, at most
    :data:`MAX_BATCH`)."""
    first = next(iter(examples.values()), None)
    one = None if first is None or not len(first) else {k: v[0] for k, v in examples.items()}
    per_example = None if one is None else task.example_bytes(one)
    if args.batch_size is not None:
        return GradientBatch(args.batch_size, per_example, args.memory_budget_mb, chosen=True)
    fits = MAX_BATCH if per_example is None else args.memory_budget_mb * _MB // per_example
    return GradientBatch(max(1, min(MAX_BATCH, fits)), per_example, args.memory_budget_mb, chosen=False)


def sized(args: ScoreArguments, task: Task, examples: Example) -> ScoreArguments:
    """``args`` with its batch size decided (unchanged when set): what the scoring functions batch ``examples`` by."""
    if args.batch_size is not None:
        return args
    return replace(args, batch_size=gradient_batch(args, task, examples).size)
