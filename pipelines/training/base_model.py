"""Base models that load offline: a seeded tiny GPT-2 and a byte-level BPE tokenizer trained locally.

Nothing is downloaded. The tokenizer is trained on a fixed built-in corpus (not on datanet data) so the
base model, and therefore its hash in every adapter lineage, does not move when a datanet grows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.training.arguments import BaseModelSpec

PAD = "<pad>"
EOS = "<eos>"

# A fixed, generic English corpus: enough for useful merges; bytes cover everything else.
_CORPUS = (
    "the quick brown fox jumps over the lazy dog. a datanet collects data from many contributors and "
    "pays each of them by the influence of their data on the model. the model is trained on the data, "
    "evaluated on questions, and the answers are scored. people write about food, cooking, recipes, "
    "weather, sports, music, science, history, money, markets, health, travel and the city. "
    "she said that it was a good day to go for a walk in the park with her friends and family. "
    "numbers like one two three four five six seven eight nine ten hundred thousand are common. "
    "in the morning we make coffee and bread; in the evening we cook rice, beans, soup and salad. "
)


@lru_cache(maxsize=4)
def build_tokenizer(vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on the built-in corpus; deterministic for a given vocabulary size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok


def build_base_model(spec: BaseModelSpec) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 whose weights depend only on ``spec`` (eager attention, for torch.func)."""
    tok = build_tokenizer(spec.vocab_size)
    config = GPT2Config(
        n_layer=spec.n_layer, n_embd=spec.n_embd, n_head=spec.n_head, n_positions=spec.n_positions,
        vocab_size=tok.get_vocab_size(), bos_token_id=tok.token_to_id(EOS), eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD), attn_implementation="eager",
        initializer_range=spec.initializer_range, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(config)
    torch.random.set_rng_state(generator_state)
    model.eval()
    return model


def base_model_hash(spec: BaseModelSpec) -> str:
    """sha256 over the tokenizer, the config and every weight: names the base model in adapter lineage."""
    return _base_model_hash(spec)


@lru_cache(maxsize=4)
def _base_model_hash(spec: BaseModelSpec) -> str:
    h = hashlib.sha256()
    h.update(build_tokenizer(spec.vocab_size).to_str().encode())
    h.update(json.dumps(asdict(spec), sort_keys=True).encode())
    for name, tensor in sorted(build_base_model(spec).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
