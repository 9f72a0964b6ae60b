"""The model-specific part of attribution (kronfluence's ``Task``): the attribution math only calls this.

A task names the parameters being attributed, gives the loss of ONE unbatched example as a pure function of
those parameters (so ``torch.func.vmap(grad(...))`` yields per-example gradients), groups parameters into
layers, turns a checkpoint into parameter values, and (for curvature-aware methods) draws targets from the
model's own predictive distribution: gradients at model-sampled targets estimate the true Fisher, which for
softmax cross-entropy equals the generalized Gauss-Newton matrix (kronfluence's ``sample=True``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import torch
from peft import PeftModel, set_peft_model_state_dict
from torch.func import functional_call

from pipelines.attribution.sizing import ModelShape, estimated_bytes
from pipelines.training.lora import example_losses

Params = dict[str, torch.Tensor]
Example = dict[str, torch.Tensor]


class Task(ABC):
    """Model-specific hooks; everything else in ``pipelines.attribution`` is model-agnostic."""

    @abstractmethod
    def params(self, checkpoint: Params) -> Params:
        """Values of the attributed parameters at ``checkpoint``, detached, in a fixed name order."""

    @abstractmethod
    def example_loss(self, params: Params, example: Example) -> torch.Tensor:
        """Scalar training loss of one example (tensors without a batch dimension)."""

    def query_loss(self, params: Params, example: Example) -> torch.Tensor:
        """The measurement whose influence is asked; the training loss unless a task overrides it."""
        return self.example_loss(params, example)

    def example_bytes(self, example: Example) -> int | None:
        """Estimated peak bytes one example like ``example`` (unbatched) adds to a gradient batch (``sizing.py``);
        None when the task cannot say (its batches are then ``sizing.MAX_BATCH``)."""
        return None

    def layer(self, name: str) -> str:
        """The layer a parameter belongs to (per-layer methods such as DataInf treat layers as blocks)."""
        return name.rsplit(".", 1)[0]

    def sample_targets(self, params: Params, batch: Example, generator: torch.Generator) -> Example:
        """``batch`` (with a batch dimension) with its targets replaced by draws from the model at ``params``.

        ``example_loss`` on the result must be the negative log-likelihood of the drawn targets; needed only by
        the ``influence`` method (its curvature is the expected outer product of these gradients)."""
        raise NotImplementedError(f"{type(self).__name__} does not sample targets; use another method")


class LoRALanguageModelTask(Task):
    """A peft LoRA causal LM: attributes the LoRA factors; a layer is one adapted module (its A and B)."""

    _LORA = re.compile(r"\.lora_[AB]\.[^.]+\.weight$")

    def __init__(self, model: PeftModel) -> None:
        self.model = model.eval()

    def params(self, checkpoint: Params) -> Params:
        set_peft_model_state_dict(self.model, checkpoint)
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _logits(self, params: Params, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits

    def example_loss(self, params: Params, example: Example) -> torch.Tensor:
        """Mean next-token loss; the targets are ``labels`` when present (model-sampled), else the inputs."""
        ids, mask = example["input_ids"][None], example["attention_mask"][None]
        targets = example.get("labels", example["input_ids"])[None]
        return example_losses(self._logits(params, ids, mask), targets, mask)[0]

    def sample_targets(self, params: Params, batch: Example, generator: torch.Generator) -> Example:
        """Next tokens drawn from the model at every position (teacher-forced on the real inputs)."""
        probs = torch.softmax(self._logits(params, batch["input_ids"], batch["attention_mask"]).double(), dim=-1)
        drawn = torch.multinomial(probs[:, :-1].reshape(-1, probs.shape[-1]), 1, generator=generator)
        labels = batch["input_ids"].clone()
        labels[:, 1:] = drawn.view(labels.shape[0], -1)
        return {**batch, "labels": labels}

    def layer(self, name: str) -> str:
        return self._LORA.sub("", name)

    def example_bytes(self, example: Example) -> int:
        """From the base model's config, the example's tokens and the number of LoRA weights."""
        attributed = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return estimated_bytes(ModelShape.of(self.model.config), example["input_ids"].shape[-1], attributed)
