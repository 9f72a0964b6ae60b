"""The seeded tiny GPT-2 base model and its byte-level BPE tokenizer, trained locally: tests, CI, ``make demo``.

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
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from pipelines.training.arguments import TINY, BaseModelSpec
from pipelines.training.base_model import EOS, PAD

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
def bpe(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok


def build_tokenizer(spec: BaseModelSpec) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the built-in corpus, deterministic for a given vocabulary size, behind the same
    Hugging Face tokenizer interface a pretrained model's tokenizer has (no chat template)."""
    return PreTrainedTokenizerFast(tokenizer_object=bpe(spec.vocab_size), pad_token=PAD, eos_token=EOS)


def build_model(spec: BaseModelSpec) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 whose weights depend only on ``spec`` (eager attention, for torch.func)."""
    tok = bpe(spec.vocab_size)
    config = GPT2Config(
        n_layer=spec.n_layer, n_embd=spec.n_embd, n_head=spec.n_head, n_positions=spec.n_positions,
        vocab_size=tok.get_vocab_size(), bos_token_id=tok.token_to_id(EOS), eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD), attn_implementation="eager",
        initializer_range=spec.initializer_range, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = GPT2LMHeadModel(config)
    model.name_or_path = TINY  # what peft writes as base_model_name_or_path
    model.eval()
    return model


def model_hash(spec: BaseModelSpec) -> str:
    """sha256 over the tokenizer, the shape settings and every weight (the same bytes as before base models had
    names, so adapters registered then still verify)."""
    h = hashlib.sha256()
    h.update(bpe(spec.vocab_size).to_str().encode())
    shape = {k: v for k, v in asdict(spec).items() if k != "name"}
    h.update(json.dumps(shape, sort_keys=True).encode())
    for name, tensor in sorted(build_model(spec).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
