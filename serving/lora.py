"""LoRA factors as the server holds them: read from a PEFT folder, checked against the base, merged for ensembles.

A loaded adapter is, per target module, ``A`` of shape (r, in) and ``B`` of shape (out, r) with the LoRA
scale (alpha / r, or alpha / sqrt(r) for rsLoRA) already folded into ``B``, so that the module's output is
``base(x) + x @ A.T @ B.T``. Folding the scale in once at load time leaves nothing per-adapter for the
batched kernel to look up but the two factors.

An ensemble ``w1*a1 + w2*a2`` is again a LoRA adapter: concatenating the factors along the rank,
``A = [A1; A2]`` and ``B = [w1 B1, w2 B2]``, gives ``B @ A = w1 B1 A1 + w2 B2 A2``, the weighted sum of the
adapters' weight deltas, exactly, with rank r1 + r2. So ensembles need no special path in the batcher.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.default)?\.weight$")


class AdapterLoadError(ValueError):
    """An adapter folder that cannot be served: missing or corrupt files, or factors that do not fit the base."""


@dataclass(frozen=True)
class LoraAdapter:
    """The resident form of one adapter (or ensemble): module path -> (A, scaled B)."""

    key: str
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _ in self.factors.values()), default=0)

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.factors.values())


def _scale(config: dict, module: str, rank: int) -> float:
    alpha = float(config.get("lora_alpha", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterLoadError(f"{folder.name}: unreadable {CONFIG_FILE}: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterLoadError(f"{folder.name}: not a LoRA adapter (peft_type {config.get('peft_type')!r})")
    unsupported = [name for name in ("use_dora", "modules_to_save") if config.get(name)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']}")
    if unsupported:
        raise AdapterLoadError(f"{folder.name}: unsupported LoRA options {unsupported}")
    return config


def load_peft_folder(folder: Path, shapes: dict[str, tuple[int, int]], key: str,
                     dtype: torch.dtype = torch.float32) -> LoraAdapter:
    """Reads ``adapter_config.json`` + ``adapter_model.safetensors`` (as peft's ``save_pretrained`` writes them).

    ``shapes`` maps each module path of the base model that may carry LoRA to its (in, out) features; any
    factor for another module, of the wrong shape, or not finite is refused with :class:`AdapterLoadError`.
    """
    folder = Path(folder)
    config = _read_config(folder)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise AdapterLoadError(f"{folder.name}: unreadable {WEIGHTS_FILE}: {exc}") from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = _KEY.match(name)
        if match is None:
            raise AdapterLoadError(f"{folder.name}: unexpected tensor {name!r} (only LoRA A/B factors are served)")
        pairs.setdefault(match["module"], {})[match["factor"]] = tensor
    if not pairs:
        raise AdapterLoadError(f"{folder.name}: no LoRA factors in {WEIGHTS_FILE}")
    factors = {}
    for module, pair in sorted(pairs.items()):
        if module not in shapes:
            raise AdapterLoadError(f"{folder.name}: module {module!r} is not a LoRA target of the served base model")
        if set(pair) != {"A", "B"}:
            raise AdapterLoadError(f"{folder.name}: module {module!r} lacks lora_{'B' if 'A' in pair else 'A'}")
        a, b = pair["A"], pair["B"]
        fan_in, fan_out = shapes[module]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != fan_in or b.shape[0] != fan_out or a.shape[0] != b.shape[1]:
            raise AdapterLoadError(f"{folder.name}: {module} factors {tuple(a.shape)}/{tuple(b.shape)} do not fit "
                                   f"a ({fan_in} -> {fan_out}) module")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise AdapterLoadError(f"{folder.name}: {module} factors hold NaN or infinity")
        scale = _scale(config, module, a.shape[0])
        factors[module] = (a.to(dtype).contiguous(), (b.to(dtype) * scale).contiguous())
    return LoraAdapter(key, factors)


def merge(parts: Sequence[tuple[LoraAdapter, float]], key: str) -> LoraAdapter:
    """The weighted ensemble of ``parts`` as one adapter: rank-concatenated factors (see the module docstring)."""
    modules = sorted({m for adapter, _ in parts for m in adapter.factors})
    factors = {}
    for module in modules:
        present = [(adapter.factors[module], weight) for adapter, weight in parts if module in adapter.factors]
        factors[module] = (torch.cat([a for (a, _), _ in present], dim=0),
                           torch.cat([b * weight for (_, b), weight in present], dim=1))
    return LoraAdapter(key, factors)
