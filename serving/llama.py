"""The Llama runner (SmolLM2 and other ``LlamaForCausalLM`` checkpoints) over the shared :class:`Runner`.

What Llama changes against GPT-2: RMSNorm before attention and MLP, rotary position embeddings on q and k
(computed by the model's own ``rotary_emb``, so ``rope_theta`` and any ``rope_scaling`` of its config apply
exactly as ``transformers`` applies them), grouped-query attention (``num_key_value_heads`` below
``num_attention_heads``: the shared :meth:`Runner._attend`), a gated MLP ``down(act(gate(x)) * up(x))``
(SwiGLU for ``hidden_act="silu"``), separate ``nn.Linear`` q/k/v/o projections (biases when the config has
them), and the output head read from ``get_output_embeddings`` (tied to the input embeddings in SmolLM2).
Every projection peft targets on Llama (q/k/v/o, gate/up/down) takes its per-row LoRA through ``LoraSlots``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import LlamaForCausalLM

from serving.model import Runner, _Step


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class LlamaRunner(Runner):
    """Prefill/decode of a ``LlamaForCausalLM`` with mixed-adapter LoRA on its seven projections."""

    modules = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

    def __init__(self, model: LlamaForCausalLM, max_batch: int, context: int | None = None) -> None:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        super().__init__(model, model.model.layers, "model.layers", max_batch, config.num_attention_heads, kv_heads,
                         head_dim, config.max_position_embeddings, context)

    def _fan(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def _dense(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, module.weight, module.bias)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        rows, t, _ = x.shape
        return x.view(rows, t, heads, self.head_dim).transpose(1, 2)

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor, step: _Step) -> torch.Tensor:
        inner = self.model.model
        h = inner.embed_tokens(ids)
        cos, sin = (x[:, None] for x in inner.rotary_emb(h, positions))  # (rows, 1, T, D): broadcast over heads
        for i, layer in enumerate(inner.layers):
            a = layer.input_layernorm(h)
            q = self._heads(self._proj(a, i, "self_attn.q_proj", step), self.n_head)
            k = self._heads(self._proj(a, i, "self_attn.k_proj", step), self.n_kv_head)
            v = self._heads(self._proj(a, i, "self_attn.v_proj", step), self.n_kv_head)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            h = h + self._proj(self._attend(step, i, q, k, v), i, "self_attn.o_proj", step)
            m = layer.post_attention_layernorm(h)
            gated = layer.mlp.act_fn(self._proj(m, i, "mlp.gate_proj", step)) * self._proj(m, i, "mlp.up_proj", step)
            h = h + self._proj(gated, i, "mlp.down_proj", step)
        return inner.norm(h)
