"""The model-specific part of attribution (kronfluence's ``Task``): the attribution math only calls this.

A task names the parameters being attributed, gives the loss of ONE unbatched example as a pure function of
those parameters (so ``torch.func.vmap(grad(...))`` yields per-example gradients), groups parameters into
layers, and turns a checkpoint into parameter values.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

import torch
from peft import PeftModel, set_peft_model_state_dict
from torch.func import functional_call

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

    def layer(self, name: str) -> str:
        """The layer a parameter belongs to (per-layer methods such as DataInf treat layers as blocks)."""
        return name.rsplit(".", 1)[0]


class LoRALanguageModelTask(Task):
    """A peft LoRA causal LM: attributes the LoRA factors; a layer is one adapted module (its A and B)."""

    _LORA = re.compile(r"\.lora_[AB]\.[^.]+\.weight$")

    def __init__(self, model: PeftModel) -> None:
        self.model = model.eval()

    def params(self, checkpoint: Params) -> Params:
        set_peft_model_state_dict(self.model, checkpoint)
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def example_loss(self, params: Params, example: Example) -> torch.Tensor:
        ids, mask = example["input_ids"][None], example["attention_mask"][None]
        logits = functional_call(self.model, params, args=(), kwargs={"input_ids": ids, "attention_mask": mask}).logits
        return example_losses(logits, ids, mask)[0]

    def layer(self, name: str) -> str:
        return self._LORA.sub("", name)
