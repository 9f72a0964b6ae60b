"""Mixed-adapter continuous batching gives each request what it would get alone, and what peft computes.

Tolerance (fp32 on CPU): 1e-4 absolute, both for a mixed batch vs
the same request alone (the rows differ only in padding and in the batch shapes the matrix kernels
block over; measured: at most 1.3e-5 with logits up to 4.3) and for our forward vs peft's model (the same float
operations in another order). Greedy tokens must be identical in both comparisons.
"""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from peft import PeftModel

from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import build_base_model
from serving.batcher import Generation, SamplingParams, StepOutput
from tests.serving_fixtures import make_engine, write_adapter

MIXED_TOLERANCE = 1e-4
PEFT_TOLERANCE = 1e-4


@pytest.fixture
def engine(tmp_path):
    root = tmp_path / "adapters"
    for datanet in (1, 2, 3):
        write_adapter(root, datanet, 1, seed=datanet)
    write_adapter(root, 4, 1, seed=4, r=4, target_modules=("c_attn", "c_fc"))  # another rank, other modules
    engine = make_engine(root, max_batch=6)
    yield engine
    engine.stop()


def idle(engine) -> bool:
    """Waits for the batcher to let its last rows leave (it reports a finish before the row leaves)."""
    for _ in range(500):
        if engine.batcher.running == 0 and engine.slots.resident == 0:
            return True
        threading.Event().wait(0.01)
    return False


def adapter(engine, name):
    if name is None:
        return None
    resolved = engine.resolve(name)
    if len(resolved.parts) == 1:
        entry = resolved.parts[0][0]
        return engine.cache.load_now(entry.adapter_id, lambda: engine.load(entry))
    for entry, _ in resolved.parts:
        engine.cache.load_now(entry.adapter_id, lambda e=entry: engine.load(e))
    import asyncio

    return asyncio.run(engine.adapter(resolved))


class Run:
    """Requests submitted to the batcher, optionally released when another has made k tokens."""

    def __init__(self, engine):
        self.engine = engine
        self.outputs: dict[str, list[StepOutput]] = {}
        self.done = threading.Semaphore(0)
        self.triggers: dict[tuple[str, int], list[Generation]] = {}
        self.order: list[tuple[str, int]] = []

    def request(self, label, adapter_obj, prompt, max_tokens, after=None):
        self.outputs[label] = []

        def sink(out, label=label):
            self.outputs[label].append(out)
            if out.token is not None:
                self.order.append((label, len(self.outputs[label])))
                for gen in self.triggers.pop((label, len(self.outputs[label])), []):
                    self.engine.batcher.submit(gen)
            if out.finish is not None:
                self.done.release()

        gen = Generation(prompt, adapter_obj, SamplingParams(max_tokens=max_tokens, temperature=0.0,
                                                             want_logits=True), sink)
        self.triggers.setdefault(after, []).append(gen)

    def wait(self):
        for gen in self.triggers.pop(None, []):  # every trigger is in place before the first request runs
            self.engine.batcher.submit(gen)
        for _ in self.outputs:
            assert self.done.acquire(timeout=60)
        return {label: ([o.token for o in outs if o.token is not None],
                        [o.logits for o in outs if o.logits is not None]) for label, outs in self.outputs.items()}


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


def test_single_adapter_matches_peft(engine, tmp_path):
    entry = engine.source.get("ad-test-4-1-4")
    run = Run(engine)
    prompt = [7, 8, 9, 10, 11]
    run.request("x", adapter(engine, entry.adapter_id), prompt, 10)
    tokens, logits = run.wait()["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = PeftModel.from_pretrained(build_base_model(BaseModelSpec()), str(entry.folder)).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
    assert expected.argmax(-1).tolist() == tokens
    assert torch.allclose(torch.stack(logits), expected, atol=PEFT_TOLERANCE, rtol=0)


def test_ensemble_equals_the_weighted_sum_of_weight_deltas(engine):
    """``a*0.7+b*0.3`` is the base with 0.7 ΔW_a + 0.3 ΔW_b merged into its weights (computed here by hand)."""
    run = Run(engine)
    prompt = [3, 4, 5, 6]
    run.request("m", adapter(engine, "dn-1*0.7+dn-4*0.3"), prompt, 8)
    tokens, logits = run.wait()["m"]
    merged = build_base_model(BaseModelSpec())
    modules = dict(merged.named_modules())
    for name, weight in (("ad-test-1-1-1", 0.7), ("ad-test-4-1-4", 0.3)):
        for module, (a, b) in engine.load(engine.source.get(name)).factors.items():
            modules[module].weight.data += weight * (b @ a).T  # Conv1D weights are (in, out)
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
