"""The base model's forward for serving: shared weights, a row-major KV cache, and per-row LoRA.

Why not ``transformers``' own forward: continuous batching needs rows of different lengths to join and
leave a running batch between decode steps, each with its own adapter. Here the KV cache is one tensor
per layer, ``(max_batch, heads, n_positions, head_dim)``; batch row i is cache row i, the running rows are
always rows 0..n-1 (a leaving row is replaced by the last one, :meth:`GPT2Runner.move_row`), and attention
masks every position past a row's own length. The forward reads the weights of a ``GPT2LMHeadModel``
(nothing is copied) and computes what it computes (tested equal to peft's model, adapter on).

Only GPT-2-style models (the seeded tiny base) have a runner so far; another architecture gets its own
runner with the same three methods.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from transformers import GPT2LMHeadModel

from serving.punica import LoraSlots

_MODULES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def lora_shapes(model: GPT2LMHeadModel) -> dict[str, tuple[int, int]]:
    """Module path (as peft names it) -> (in, out) features, for every projection LoRA may target."""
    shapes = {}
    for i, block in enumerate(model.transformer.h):
        for name in _MODULES:
            weight = block.get_submodule(name).weight  # Conv1D: (in, out)
            shapes[f"transformer.h.{i}.{name}"] = (weight.shape[0], weight.shape[1])
    return shapes


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Runner:
    """Prefill and decode steps over a fixed-capacity KV cache, LoRA from a :class:`LoraSlots` table."""

    def __init__(self, model: GPT2LMHeadModel, max_batch: int) -> None:
        config = model.config
        if config.activation_function != "gelu_new" or config.scale_attn_by_inverse_layer_idx:
            raise ValueError("GPT2Runner supports GPT-2 configs with gelu_new and plain attention scaling")
        self.model = model
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.n_positions = config.n_positions
        self.vocab_size = config.vocab_size
        self.eps = config.layer_norm_epsilon
        self.max_batch = max_batch
        weight = model.transformer.wte.weight
        shape = (len(model.transformer.h), max_batch, self.n_head, self.n_positions, self.head_dim)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

    def _proj(self, x: torch.Tensor, layer: int, name: str, lora: LoraSlots, slots: torch.Tensor) -> torch.Tensor:
        module = self.model.transformer.h[layer].get_submodule(name)
        y = torch.addmm(module.bias, x.reshape(-1, x.shape[-1]), module.weight).view(*x.shape[:-1], -1)
        delta = lora.delta(f"transformer.h.{layer}.{name}", x, slots)
        return y if delta is None else y + delta

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, lora: LoraSlots, slots: torch.Tensor,
                 write, row0: int, keys_len: int, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (rows, T, E) of cache rows row0.. after the final norm; ``write`` stores new K/V."""
        tf = self.model.transformer
        h = tf.wte(ids) + tf.wpe(positions)
        rows, t = ids.shape
        for layer, block in enumerate(tf.h):
            a = F.layer_norm(h, (h.shape[-1],), block.ln_1.weight, block.ln_1.bias, self.eps)
            q, k, v = self._proj(a, layer, "attn.c_attn", lora, slots).split(h.shape[-1], dim=-1)
            q = q.view(rows, t, self.n_head, self.head_dim).transpose(1, 2)
            k = k.view(rows, t, self.n_head, self.head_dim).transpose(1, 2)
            v = v.view(rows, t, self.n_head, self.head_dim).transpose(1, 2)
            write(layer, k, v)
            keys = self.k[layer, row0:row0 + rows, :, :keys_len]
            values = self.v[layer, row0:row0 + rows, :, :keys_len]
            scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            attn = torch.matmul(torch.softmax(scores, dim=-1), values)
            attn = attn.transpose(1, 2).reshape(rows, t, -1)
            h = h + self._proj(attn, layer, "attn.c_proj", lora, slots)
            m = F.layer_norm(h, (h.shape[-1],), block.ln_2.weight, block.ln_2.bias, self.eps)
            h = h + self._proj(_gelu_new(self._proj(m, layer, "mlp.c_fc", lora, slots)), layer, "mlp.c_proj", lora,
                               slots)
        return F.layer_norm(h, (h.shape[-1],), tf.ln_f.weight, tf.ln_f.bias, self.eps)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.model.lm_head.weight.T

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

        hidden = self._forward(ids, positions, lora, slots, write, first_row, t, mask)
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
        hidden = self._forward(tokens[:, None], lengths[:, None], lora, slots, write, 0, keys_len, mask)
        return self._logits(hidden[:, 0])

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copies cache row ``source`` (its first ``length`` positions) to ``target``: compaction on leave."""
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]

