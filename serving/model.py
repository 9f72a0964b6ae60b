"""The base model's forward for serving: shared weights, a row-major KV cache, and per-row LoRA.

Why not ``transformers``' own forward: continuous batching needs rows of different lengths to join and
leave a running batch between decode steps, each with its own adapter. Here the KV cache is one tensor
per layer, ``(max_batch, kv_heads, context, head_dim)``; batch row i is cache row i, the running rows are
always rows 0..n-1 (a leaving row is replaced by the last one, :meth:`Runner.move_row`), and attention
masks every position past a row's own length. A runner reads the weights of a ``transformers`` model
(nothing is copied) and computes what it computes (tested equal to peft's model, adapters on).

:class:`Runner` holds what every architecture shares: the cache, prefill and decode, attention over the cache
(grouped-query when the model has fewer key/value heads than query heads), and LoRA on each projection
through :class:`LoraSlots`. An architecture contributes its block (:meth:`Runner._hidden`), how a projection
applies its base weight, and the per-layer modules LoRA may target: :class:`GPT2Runner` here (the seeded
tiny base), ``serving.llama.LlamaRunner`` for Llama models (SmolLM2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GPT2LMHeadModel, PreTrainedModel

from serving.punica import LoraSlots


@dataclass(frozen=True)
class _Step:
    """One forward's rows: their LoRA, where new K/V go (``write``), and which cached positions each may see."""

    lora: LoraSlots
    slots: torch.Tensor
    write: Callable[[int, torch.Tensor, torch.Tensor], None]
    row0: int
    keys_len: int
    mask: torch.Tensor
    """(rows, 1, T, keys_len): True where a query position may attend to a cached one."""


class Runner:
    """Prefill and decode steps over a fixed-capacity KV cache, LoRA from a :class:`LoraSlots` table."""

    modules: tuple[str, ...] = ()
    """Per-layer module paths (relative to a layer) that may carry LoRA factors."""

    def __init__(self, model: PreTrainedModel, layers: nn.ModuleList, prefix: str, max_batch: int, n_head: int,
                 n_kv_head: int, head_dim: int, n_positions: int, context: int | None) -> None:
        if n_head % n_kv_head:
            raise ValueError(f"{n_head} attention heads do not split into {n_kv_head} key/value groups")
        self.model, self.layers, self.prefix = model, layers, prefix
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.n_positions = min(n_positions, context) if context else n_positions
        """The context served: the model's own, or less (the KV cache holds max_batch rows of it)."""
        self.vocab_size = model.config.vocab_size
        self.max_batch = max_batch
        weight = model.get_input_embeddings().weight
        shape = (len(layers), max_batch, n_kv_head, self.n_positions, head_dim)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)

    @property
    def device(self) -> torch.device:
        return self.k.device

    def _fan(self, module: nn.Module) -> tuple[int, int]:
        """(in, out) features of a projection."""
        raise NotImplementedError

    def _dense(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The projection's base output (its weight and bias, no LoRA)."""
        raise NotImplementedError

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor, step: _Step) -> torch.Tensor:
        """Hidden states (rows, T, E) after the final norm; attention goes through :meth:`_attend`."""
        raise NotImplementedError

    def lora_shapes(self) -> dict[str, tuple[int, int]]:
        """Module path (as peft names it) -> (in, out) features, for every projection LoRA may target."""
        return {f"{self.prefix}.{i}.{name}": self._fan(layer.get_submodule(name))
                for i, layer in enumerate(self.layers) for name in self.modules}

    def _proj(self, x: torch.Tensor, layer: int, name: str, step: _Step) -> torch.Tensor:
        y = self._dense(self.layers[layer].get_submodule(name), x)
        delta = step.lora.delta(f"{self.prefix}.{layer}.{name}", x, step.slots)
        return y if delta is None else y + delta

    def _attend(self, step: _Step, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Stores k, v (rows, kv_heads, T, D) and attends q (rows, heads, T, D) over the cache -> (rows, T, heads*D).

        Grouped-query attention without repeating the cache: the query heads of one key/value head (adjacent,
        as in ``transformers``' ``repeat_kv``) are folded into the query length of that head."""
        step.write(layer, k, v)
        rows, _, t, _ = q.shape
        group = self.n_head // self.n_kv_head
        keys = self.k[layer, step.row0:step.row0 + rows, :, :step.keys_len]
        values = self.v[layer, step.row0:step.row0 + rows, :, :step.keys_len]
        q = q.reshape(rows, self.n_kv_head, group * t, self.head_dim)
        scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.view(rows, self.n_kv_head, group, t, step.keys_len)
        scores = scores.masked_fill(~step.mask[:, :, None], torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1).view(rows, self.n_kv_head, group * t, step.keys_len)
        attn = torch.matmul(probs, values).view(rows, self.n_head, t, self.head_dim)
        return attn.transpose(1, 2).reshape(rows, t, -1)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.model.get_output_embeddings().weight.T

    def prefill(self, first_row: int, prompts: list[list[int]], lora: LoraSlots, slots: torch.Tensor) -> torch.Tensor:
        """Runs the prompts of rows first_row.. (right-padded together); returns next-token logits (rows, V).

        Rows before ``first_row`` are not touched: the running batch goes on where it was.
        """
        rows, t = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(rows, t, dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        for i, prompt in enumerate(prompts):
            ids[i, :len(prompt)] = torch.tensor(prompt)
        positions = torch.arange(t, device=self.device).expand(rows, t)
        causal = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
        mask = (causal[None] & (positions < lengths[:, None])[:, None, :])[:, None]  # (rows, 1, T, T)
        span = slice(first_row, first_row + rows)

        def write(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
            self.k[layer, span, :, :t] = k
            self.v[layer, span, :, :t] = v

        hidden = self._hidden(ids, positions, _Step(lora, slots, write, first_row, t, mask))
        return self._logits(hidden[torch.arange(rows), lengths - 1])

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor, lora: LoraSlots, slots: torch.Tensor) -> torch.Tensor:
        """One step for rows 0..n-1: token i sits at position lengths[i]; returns next-token logits (n, V)."""
        rows = tokens.shape[0]
        keys_len = int(lengths.max()) + 1
        index = torch.arange(rows, device=self.device)

        def write(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
            self.k[layer, index, :, lengths] = k[:, :, 0]
            self.v[layer, index, :, lengths] = v[:, :, 0]

        mask = (torch.arange(keys_len, device=self.device)[None] <= lengths[:, None])[:, None, None, :]
        hidden = self._hidden(tokens[:, None], lengths[:, None], _Step(lora, slots, write, 0, keys_len, mask))
        return self._logits(hidden[:, 0])

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copies cache row ``source`` (its first ``length`` positions) to ``target``: compaction on leave."""
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Runner(Runner):
    """GPT-2: learned positions, LayerNorm, fused QKV, GELU MLP; ``Conv1D`` weights are stored (in, out)."""

    modules = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

    def __init__(self, model: GPT2LMHeadModel, max_batch: int, context: int | None = None) -> None:
        config = model.config
        if config.activation_function != "gelu_new" or config.scale_attn_by_inverse_layer_idx:
            raise ValueError("GPT2Runner supports GPT-2 configs with gelu_new and plain attention scaling")
        super().__init__(model, model.transformer.h, "transformer.h", max_batch, config.n_head, config.n_head,
                         config.n_embd // config.n_head, config.n_positions, context)
        self.eps = config.layer_norm_epsilon

    def _fan(self, module: nn.Module) -> tuple[int, int]:
        return module.weight.shape[0], module.weight.shape[1]

    def _dense(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(module.bias, x.reshape(-1, x.shape[-1]), module.weight).view(*x.shape[:-1], -1)

    def _norm(self, h: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return F.layer_norm(h, (h.shape[-1],), norm.weight, norm.bias, self.eps)

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor, step: _Step) -> torch.Tensor:
        tf = self.model.transformer
        h = tf.wte(ids) + tf.wpe(positions)
        rows, t = ids.shape
        for layer, block in enumerate(tf.h):
            q, k, v = self._proj(self._norm(h, block.ln_1), layer, "attn.c_attn", step).split(h.shape[-1], dim=-1)
            q, k, v = (x.view(rows, t, self.n_head, self.head_dim).transpose(1, 2) for x in (q, k, v))
            h = h + self._proj(self._attend(step, layer, q, k, v), layer, "attn.c_proj", step)
            m = self._proj(self._norm(h, block.ln_2), layer, "mlp.c_fc", step)
            h = h + self._proj(_gelu_new(m), layer, "mlp.c_proj", step)
        return self._norm(h, tf.ln_f)
