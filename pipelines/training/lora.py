"""Deterministic LoRA fine-tuning of the base model on tokenized examples, keeping checkpoints for attribution."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from rich.progress import Progress
from transformers import GPT2LMHeadModel

from payable.progress import console
from pipelines.training.arguments import TrainingArguments
from pipelines.training.data import Examples


@dataclass(frozen=True)
class Checkpoint:
    """An adapter snapshot: its training step, the learning rate in force, and the LoRA weights."""

    step: int
    learning_rate: float
    state: dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainResult:
    model: PeftModel
    checkpoints: list[Checkpoint]
    loss_curve: list[float]
    metrics: dict[str, float]


@contextmanager
def deterministic(num_threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration of a run, then restored."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict)
        torch.set_num_threads(threads)


def lora_config(args: TrainingArguments) -> LoraConfig:
    """LoRA without dropout: dropout would make the loss (and every gradient attribution uses) random."""
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=list(args.target_modules),
                      lora_dropout=0.0, fan_in_fan_out=True, bias="none")


def attach_lora(base: GPT2LMHeadModel, args: TrainingArguments,
                state: dict[str, torch.Tensor] | None = None) -> PeftModel:
    """Wraps ``base`` with fresh LoRA factors seeded by ``args.seed``, or with the given adapter weights."""
    rng = torch.random.get_rng_state()
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 API deprecated for v6
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base, lora_config(args))
    torch.random.set_rng_state(rng)
    if state is not None:
        set_peft_model_state_dict(model, state)
    model.eval()
    return model


def example_losses(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy per example over its real tokens: shape (batch,)."""
    target = input_ids[..., 1:]
    weight = attention_mask[..., 1:].to(logits.dtype)
    nll = torch.nn.functional.cross_entropy(logits[..., :-1, :].transpose(-1, -2), target, reduction="none")
    return (nll * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: Examples, batch_size: int = 64) -> float:
    """Average per-example loss over ``examples`` (the eval metric)."""
    total = 0.0
    for start in range(0, len(examples), batch_size):
        batch = examples.batch(slice(start, start + batch_size))
        logits = model(**batch).logits
        total += float(example_losses(logits, batch["input_ids"], batch["attention_mask"]).sum())
    return total / max(len(examples), 1)


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The LoRA weights alone, detached and contiguous (what the registry stores)."""
    return {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def train_lora(base: GPT2LMHeadModel, train: Examples, queries: Examples, args: TrainingArguments,
               show_progress: bool = True) -> TrainResult:
    """Adam on the LoRA factors, batch order from a seeded generator; records loss curve and eval metrics."""
    with deterministic(args.num_threads):
        base_eval = mean_loss(base, queries) if len(queries) else float("nan")
        model = attach_lora(base, args)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=args.learning_rate)
        generator = torch.Generator().manual_seed(args.seed)
        steps_per_epoch = math.ceil(len(train) / args.batch_size)
        total = steps_per_epoch * args.epochs
        keep = {round(total * (i + 1) / args.num_checkpoints) for i in range(args.num_checkpoints)}
        checkpoints: list[Checkpoint] = []
        curve: list[float] = []
        step = 0
        with Progress(disable=not show_progress, transient=True, console=console) as progress:
            task = progress.add_task("LoRA training", total=total)
            for _ in range(args.epochs):
                order = torch.randperm(len(train), generator=generator)
                for start in range(0, len(train), args.batch_size):
                    model.train()
                    batch = train.batch(order[start:start + args.batch_size])
                    loss = example_losses(model(**batch).logits, batch["input_ids"], batch["attention_mask"]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    curve.append(round(float(loss.detach()), 6))
                    if step in keep:
                        checkpoints.append(Checkpoint(step, args.learning_rate, adapter_state(model)))
                    progress.advance(task)
        model.eval()
        eval_loss = mean_loss(model, queries) if len(queries) else float("nan")
    metrics = {"base_eval_loss": base_eval, "eval_loss": eval_loss, "eval_perplexity": math.exp(eval_loss),
               "final_train_loss": curve[-1] if curve else float("nan"), "steps": float(step)}
    return TrainResult(model=model, checkpoints=checkpoints, loss_curve=curve, metrics=metrics)
