"""Mixed-adapter continuous batching gives each request what it would get alone, and what peft computes,
on each served architecture: the seeded tiny GPT-2 and a small random Llama (2 layers, hidden 64, 4 query heads
over 2 key/value heads, llama3 RoPE scaling, tied embeddings; LoRA on q/k/v/o and gate/up/down).

Tolerance (fp32 on CPU): 1e-4 absolute, both for a mixed batch vs
the same request alone (the rows differ only in padding and in the batch shapes the matrix kernels
block over; measured: at most 1.3e-5 with logits up to 4.3) and for our forward vs peft's model (the same float
operations in another order; measured on the Llama: 5e-6 with logits up to 2.8). Greedy tokens must be
identical in both comparisons.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import PeftModel

from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import CONV1D_ARCHITECTURES, load_model
from tests.serving_fixtures import Run, adapter, idle, make_engine, write_adapter, write_llama_base

MIXED_TOLERANCE = 1e-4
PEFT_TOLERANCE = 1e-4


PARTIAL_TARGETS = {"gpt2": ("c_attn", "c_fc"), "llama": ("q_proj", "v_proj", "gate_proj")}
"""Per architecture, an adapter's targets that are not the default ones (a module some adapters lack)."""


@pytest.fixture(scope="module", params=sorted(PARTIAL_TARGETS))
def spec(request, tmp_path_factory) -> BaseModelSpec:
    if request.param == "gpt2":
        return BaseModelSpec()
    return write_llama_base(tmp_path_factory.mktemp("llama") / "base")


@pytest.fixture
def engine(tmp_path, spec):
    root = tmp_path / "adapters"
    for datanet in (1, 2, 3):
        write_adapter(root, datanet, 1, seed=datanet, spec=spec)
    architecture = load_model(spec).config.model_type
    write_adapter(root, 4, 1, seed=4, r=4, spec=spec, target_modules=PARTIAL_TARGETS[architecture])  # rank, modules
    engine = make_engine(root, max_batch=6, spec=spec)
    yield engine
    engine.stop()


REQUESTS = [  # label, model, prompt, max tokens, joins after (label, tokens)
    ("a", "ad-test-1-1-1", [5, 6, 7, 8, 9, 10, 11], 12, None),
    ("b", "ad-test-2-1-2", [20, 21, 22], 9, None),
    ("c", "ad-test-1-1-1", [30, 31, 32, 33], 6, None),
    ("d", None, [40, 41], 8, ("b", 3)),
    ("e", "ad-test-3-1-3", [50, 51, 52, 53, 54, 55], 10, ("a", 2)),
    ("f", "ad-test-4-1-4", [60, 61, 62, 63, 64], 7, ("c", 6)),
    ("g", "ad-test-2-1-2+ad-test-4-1-4*0.5", [70, 71, 72], 8, ("a", 5)),
]


def test_mixed_batch_equals_each_request_alone(engine):
    mixed = Run(engine)
    for label, model, prompt, n, after in REQUESTS:
        mixed.request(label, adapter(engine, model), prompt, n, after)
    together = mixed.wait()
    # requests joined a running batch: some joiner's first token came before an earlier request's last one
    first_e = mixed.order.index(("e", 1))
    assert first_e < mixed.order.index(("a", len(together["a"][0])))
    assert engine.batcher.stats.prefills >= 4
    assert idle(engine)
    for label, model, prompt, n, _ in REQUESTS:
        alone = Run(engine)
        alone.request(label, adapter(engine, model), prompt, n)
        tokens, logits = alone.wait()[label]
        assert together[label][0] == tokens, label
        assert len(tokens) == n
        for step, (x, y) in enumerate(zip(together[label][1], logits, strict=True)):
            assert torch.allclose(x, y, atol=MIXED_TOLERANCE, rtol=0), (label, step, float((x - y).abs().max()))
    # the adapters really differ: same prompt, different models, different logits
    assert not torch.allclose(together["a"][1][0], together["c"][1][0])


@pytest.mark.parametrize("adapter_id", ["ad-test-1-1-1", "ad-test-4-1-4"])
def test_single_adapter_matches_peft(engine, spec, adapter_id):
    entry = engine.source.get(adapter_id)
    run = Run(engine)
    prompt = [7, 8, 9, 10, 11]
    run.request("x", adapter(engine, entry.adapter_id), prompt, 10)
    tokens, logits = run.wait()["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = PeftModel.from_pretrained(load_model(spec), str(entry.folder)).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
    assert expected.argmax(-1).tolist() == tokens
    assert torch.allclose(torch.stack(logits), expected, atol=PEFT_TOLERANCE, rtol=0)


def test_ensemble_equals_the_weighted_sum_of_weight_deltas(engine, spec):
    """``a*0.7+b*0.3`` is the base with 0.7 ΔW_a + 0.3 ΔW_b merged into its weights (computed here by hand)."""
    run = Run(engine)
    prompt = [3, 4, 5, 6]
    run.request("m", adapter(engine, "dn-1*0.7+dn-4*0.3"), prompt, 8)
    tokens, logits = run.wait()["m"]
    merged = load_model(spec)
    transposed = merged.config.model_type in CONV1D_ARCHITECTURES  # Conv1D weights are (in, out)
    modules = dict(merged.named_modules())
    for name, weight in (("ad-test-1-1-1", 0.7), ("ad-test-4-1-4", 0.3)):
        for module, (a, b) in engine.load(engine.source.get(name)).factors.items():
            delta = b @ a
            modules[module].weight.data += weight * (delta.T if transposed else delta)
    with torch.no_grad():
        expected = merged(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
    assert expected.argmax(-1).tolist() == tokens
    assert torch.allclose(torch.stack(logits), expected, atol=PEFT_TOLERANCE, rtol=0)


def test_a_failed_step_ends_its_requests_and_the_worker_lives_on(engine):
    good = adapter(engine, "dn-1")
    bad = Run(engine)
    bad.request("bad", good, [1, 2, 10_000], 4)  # a token id outside the vocabulary fails the prefill
    outputs = bad.wait()
    assert bad.outputs["bad"][-1].finish == "error" and outputs["bad"][0] == []
    after = Run(engine)
    after.request("ok", good, [1, 2, 3], 4)
    assert len(after.wait()["ok"][0]) == 4
    assert engine.batcher.stats.errors == 1 and idle(engine)
