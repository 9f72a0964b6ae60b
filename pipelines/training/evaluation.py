"""What an operator reads about an adapter beyond its loss: base vs tuned continuations of the eval prompts.

Each eval query is cut in half (by words): the first half is the prompt, the second the reference. Both the
base model (adapter disabled) and the tuned model continue the prompt greedily, so the samples are
deterministic (same adapter, same text) and can sit in the lineage. The prompt is plain text, as the adapter
was trained on plain text; a chat model's template is for serving, not for this comparison.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from pipelines.training.arguments import TrainingArguments
from pipelines.training.lora import deterministic, device_of

NUM_SAMPLES = 3
NEW_TOKENS = 24


def split_prompt(text: str) -> tuple[str, str]:
    """(prompt, reference): the first half of the words, and the rest."""
    words = text.split()
    cut = max(1, len(words) // 2)
    return " ".join(words[:cut]), " ".join(words[cut:])


@torch.no_grad()
def _continue(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int,
              new_tokens: int) -> str:
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][:, -max_length:]
    ids = ids.to(device_of(model))
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def sample_generations(model: PeftModel, tokenizer: PreTrainedTokenizerBase, queries: list[str],
                       args: TrainingArguments, num_samples: int = NUM_SAMPLES,
                       new_tokens: int = NEW_TOKENS) -> list[dict[str, str]]:
    """``[{"prompt", "reference", "base", "tuned"}]`` for the first ``num_samples`` eval queries."""
    samples = []
    model.eval()
    with deterministic(args.num_threads):
        for text in queries[:num_samples]:
            samples.append(_sample(model, tokenizer, text, args.max_length, new_tokens))
    return samples


def _sample(model: PeftModel, tokenizer: PreTrainedTokenizerBase, text: str, max_length: int,
            new_tokens: int) -> dict[str, str]:
    prompt, reference = split_prompt(text)
    tuned = _continue(model, tokenizer, prompt, max_length, new_tokens)
    with model.disable_adapter():
        base = _continue(model, tokenizer, prompt, max_length, new_tokens)
    return {"prompt": prompt, "reference": reference, "base": base, "tuned": tuned}
