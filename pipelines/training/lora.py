"""Deterministic LoRA fine-tuning of the base model on tokenized examples, keeping checkpoints for attribution."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from rich.progress import Progress
from transformers import PreTrainedModel

from payable.progress import console
from pipelines.training.arguments import TrainingArguments
from pipelines.training.base_model import CONV1D_ARCHITECTURES, lora_targets
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
    """Deterministic figures (they go into the lineage): base vs tuned eval loss and perplexity, final loss."""
    seconds: dict[str, float]
    """Wall times (``train``, ``per_step``): reported, never part of the lineage."""


@contextmanager
def deterministic(num_threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration of a run, then restored."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict)
        torch.set_num_threads(threads)


def lora_config(args: TrainingArguments, model_type: str) -> LoraConfig:
    """The peft config of ``args`` for a base of architecture ``model_type`` (empty ``target_modules``: the
    architecture's default); it is what ``adapter_config.json`` holds."""
    targets = args.target_modules or lora_targets(model_type)
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, target_modules=list(targets),
                      lora_dropout=args.lora_dropout, fan_in_fan_out=model_type in CONV1D_ARCHITECTURES,
                      bias="none", task_type="CAUSAL_LM", base_model_name_or_path=args.base.name)


def attach_lora(base: PreTrainedModel, args: TrainingArguments) -> PeftModel:
    """Wraps ``base`` with fresh LoRA factors seeded by ``args.seed`` (a fresh, trainable adapter)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(args.seed)
        # peft 0.21 calls a transformers 5 API deprecated for v6
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base, lora_config(args, base.config.model_type))
    model.eval()
    return model


def example_losses(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy per example over its real tokens: shape (batch,)."""
    target = input_ids[..., 1:]
    weight = attention_mask[..., 1:].to(logits.dtype)
    nll = torch.nn.functional.cross_entropy(logits[..., :-1, :].transpose(-1, -2), target, reduction="none")
    return (nll * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: Examples, batch_size: int = 64) -> float:
    """Average per-example loss over ``examples`` (the eval metric)."""
    total = 0.0
    device = device_of(model)
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in examples.batch(slice(start, start + batch_size)).items()}
        logits = model(**batch).logits
        total += float(example_losses(logits, batch["input_ids"], batch["attention_mask"]).sum())
    return total / max(len(examples), 1)


@torch.no_grad()
def per_owner_losses(model: torch.nn.Module, examples: Examples, owners: int, batch_size: int = 64) -> np.ndarray:
    """Summed per-example loss of each owner's examples (shape (owners,)): a text cut into windows is one row."""
    out = np.zeros(owners)
    device = device_of(model)
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in examples.batch(slice(start, start + batch_size)).items()}
        losses = example_losses(model(**batch).logits, batch["input_ids"], batch["attention_mask"])
        np.add.at(out, examples.owner[start:start + batch_size].numpy(), losses.double().cpu().numpy())
    return out


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The LoRA weights alone, detached, contiguous and on the CPU (what the registry stores). Embedding layers
    are never adapted: ``save_embedding_layers="auto"`` would look the base model's name up on the Hub."""
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def train_lora(base: PreTrainedModel, train: Examples, queries: Examples, args: TrainingArguments,
               show_progress: bool = True) -> TrainResult:
    """Adam on the LoRA factors, batch order from a seeded generator (dropout seeded too); records the loss curve
    and base vs tuned eval loss and perplexity."""
    if not len(train):
        raise ValueError("no training examples")
    started = time.perf_counter()
    device = device_of(base)
    with deterministic(args.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
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
        loop_started = time.perf_counter()
        with Progress(disable=not show_progress, transient=True, console=console) as progress:
            task = progress.add_task("LoRA training", total=total)
            for _ in range(args.epochs):
                order = torch.randperm(len(train), generator=generator)
                for start in range(0, len(train), args.batch_size):
                    model.train()
                    batch = {k: v.to(device) for k, v in train.batch(order[start:start + args.batch_size]).items()}
                    loss = example_losses(model(**batch).logits, batch["input_ids"], batch["attention_mask"]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    curve.append(round(float(loss.detach()), 6))
                    if step in keep:
                        checkpoints.append(Checkpoint(step, args.learning_rate, adapter_state(model)))
                    progress.advance(task)
        loop_seconds = time.perf_counter() - loop_started
        model.eval()
        eval_loss = mean_loss(model, queries) if len(queries) else float("nan")
    metrics = {"base_eval_loss": base_eval, "base_eval_perplexity": _perplexity(base_eval), "eval_loss": eval_loss,
               "eval_perplexity": _perplexity(eval_loss), "final_train_loss": curve[-1], "steps": float(step)}
    seconds = {"train": round(time.perf_counter() - started, 3), "per_step": round(loop_seconds / step, 4)}
    return TrainResult(model=model, checkpoints=checkpoints, loss_curve=curve, metrics=metrics, seconds=seconds)


def _perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")
