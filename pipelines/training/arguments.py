"""Typed settings for LoRA training, passed whole (kronfluence style) rather than as keyword lists.

Every field that changes the trained weights is part of the adapter's lineage and of its id, so two
runs with equal arguments on equal data are the same adapter (and the second one is a no-op).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class BaseModelSpec:
    """The tiny GPT-2-style causal LM that loads offline: random weights fixed by ``seed``."""

    seed: int = 0
    """Seeds the random initialisation of the base weights (not the adapter)."""
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    vocab_size: int = 512
    """Size of the byte-level BPE vocabulary trained locally (256 bytes + merges + specials)."""
    initializer_range: float = 0.1
    """Std of the random weights. GPT-2's 0.02 caps logits so low that LoRA alone barely lowers the loss."""


@dataclass(frozen=True)
class TrainingArguments:
    """How a LoRA adapter is fitted to one dataset version."""

    seed: int = 0
    """Seeds adapter initialisation and batch order: same seed, same data, same adapter bytes."""
    base: BaseModelSpec = field(default_factory=BaseModelSpec)
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("c_attn", "c_proj")
    """GPT-2 modules that get LoRA factors (attention in/out and MLP out projections)."""
    learning_rate: float = 1e-2
    epochs: int = 5
    batch_size: int = 8
    max_length: int = 64
    """Tokens per training example; longer contributions are cut into several examples."""
    num_checkpoints: int = 3
    """Adapter snapshots kept along training (the last is the final adapter): TracIn/TRAK average over them."""
    eval_holdout_mod: int = 10
    """When a datanet has no stored eval set, contributions whose content hash is 0 modulo this are held out
    as evaluation queries (stable as the datanet grows: a contribution never changes side)."""
    num_threads: int = 1
    """Torch threads. One by default: on a busy 2-core machine, 2 OpenMP threads ran 6x slower than one."""

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the lineage record and the adapter id."""
        doc = asdict(self)
        doc["target_modules"] = list(self.target_modules)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> TrainingArguments:
        """Inverse of :meth:`to_dict` (reads a lineage record back)."""
        return cls(**{**doc, "base": BaseModelSpec(**doc["base"]), "target_modules": tuple(doc["target_modules"])})
