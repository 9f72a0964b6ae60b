"""The OpenAI-compatible API under a real uvicorn server, driven by the real ``openai`` client (and httpx).

Usage events go to a Kafka address where nothing listens: they stay buffered in the writer, which is
where these tests read them (delivery to a real broker is tests/test_serving_usage.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import openai
import pytest

from payable import services
from payable.keys import Role, dev_account
from payable.settings import Settings
from serving.status import ServerStatus, parse_metrics
from serving.usage import usage_id
from tests.serving_fixtures import openai_client, running_server, usage_of, write_adapter

CALLER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    data = tmp_path_factory.mktemp("serve")
    settings = replace(Settings.from_env(data), kafka_bootstrap=f"127.0.0.1:{services.free_port()}")
    write_adapter(settings.adapters_dir, 1, 1, seed=1)
    write_adapter(settings.adapters_dir, 1, 2, seed=2)
    write_adapter(settings.adapters_dir, 2, 1, seed=3)
    write_adapter(settings.adapters_dir, 3, 1, seed=4)
    corrupt = write_adapter(settings.adapters_dir, 9, 1, seed=9)
    (settings.adapters_dir / "dn-9" / corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    return settings


@pytest.fixture(scope="module")
def server(settings):
    with running_server(settings) as running:
        yield running


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai_client(server)


def metrics(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    return {k.removeprefix("payable_serve_"): v for k, v in parse_metrics(text).items()}


def test_models_lists_every_adapter_and_each_datanets_latest(client):
    cards = {m.id: m for m in client.models.list()}
    assert set(cards) == {"tiny-gpt2", "ad-test-1-1-1", "ad-test-1-2-2", "ad-test-2-1-3", "ad-test-3-1-4",
                          "ad-test-9-1-9", "dn-1", "dn-2", "dn-3", "dn-9"}
    assert cards["dn-1"].root == "ad-test-1-2-2" and cards["dn-1"].dataset_version == 2
    assert cards["ad-test-1-1-1"].owned_by == "dn-1" and cards["ad-test-1-1-1"].parent == "tiny-gpt2"
    assert client.models.retrieve("dn-2").root == "ad-test-2-1-3"


def test_streamed_completion_is_the_whole_completion_in_pieces(client, server):
    whole = client.completions.create(model="dn-1", prompt="the quick brown fox", max_tokens=20, temperature=0,
                                      extra_headers={"X-Payable-Caller": CALLER, "X-Request-Id": "whole-1"})
    chunks = list(client.completions.create(model="dn-1", prompt="the quick brown fox", max_tokens=20,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len(pieces) > 5 and "".join(pieces) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 20
    assert whole.usage.prompt_tokens == len(server.service.engine.base.encode("the quick brown fox"))
    event = usage_of(server, "whole-1")
    assert event["event_id"] == usage_id("whole-1")
    assert (event["adapter_ids"], event["datanet_ids"], event["dataset_versions"]) == (["ad-test-1-2-2"], [1], [2])
    assert event["caller"] == CALLER.lower() and event["completion_tokens"] == 20
    assert event["base_model_hash"] == server.service.engine.base.hash and event["retrieved_sources"] == []


def test_chat_completion_streams_deltas(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a datanet?"}]
    whole = client.chat.completions.create(model="dn-2", messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="dn-2", messages=messages, max_tokens=12, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert whole.choices[0].message.content and whole.usage.completion_tokens == 12


def test_ensembles_and_adapters_answer_differently(client, server):
    def text(model: str) -> str:
        return client.completions.create(model=model, prompt="in the morning", max_tokens=12,
                                         temperature=0).choices[0].text

    answers = {m: text(m) for m in ("dn-1", "dn-2", "dn-1+dn-2", "dn-1*0.7+dn-2*0.3", "tiny-gpt2")}
    assert len(set(answers.values())) == len(answers)
    client.completions.create(model="dn-1*0.7+dn-2*0.3", prompt="x", max_tokens=2,
                              extra_headers={"X-Request-Id": "ens-1"})
    event = usage_of(server, "ens-1")
    assert event["adapter_ids"] == ["ad-test-1-2-2", "ad-test-2-1-3"] and event["adapter_weights"] == [0.7, 0.3]


def test_cache_counters_in_metrics(client, server):
    before = metrics(server)
    client.completions.create(model="dn-3", prompt="a", max_tokens=1)
    client.completions.create(model="dn-3", prompt="b", max_tokens=1)
    after = metrics(server)
    assert after["adapter_cache_misses_total"] - before["adapter_cache_misses_total"] == 1
    assert after["adapter_cache_hits_total"] - before["adapter_cache_hits_total"] == 1
    assert after["adapter_cache_resident"] >= 1 and after["adapter_cache_load_seconds_total"] > 0
    assert after["usage_events_recorded_total"] - before["usage_events_recorded_total"] == 2
    status = ServerStatus(server.url, 0, [], after)
    assert status.agent == dev_account(Role.AGENT.value).address.lower(), "the agent that signs the usage events"
    assert status.agent_standing == "unknown" and after["agent_staked"] == -1, "no deployment here: not knowable"


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"model": "dn-404", "prompt": "x"}, 404, "model_not_found"),
    ({"model": "ad-missing+dn-1", "prompt": "x"}, 404, "model_not_found"),
    ({"model": "dn-1", "prompt": "the " * 200}, 400, "context_length_exceeded"),
    ({"model": "dn-1", "prompt": "x", "max_tokens": 500}, 400, "context_length_exceeded"),
    ({"model": "dn-1", "prompt": "x", "n": 2}, 400, None),
    ({"model": "dn-9", "prompt": "x"}, 500, "adapter_unavailable"),
])
def test_bad_requests_get_openai_errors(client, kwargs, status, code):
    with pytest.raises(openai.APIStatusError) as raised:
        client.completions.create(**kwargs)
    assert raised.value.status_code == status
    body = raised.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == code and body["message"]


def test_corrupt_adapter_is_reported_not_cached_and_the_server_goes_on(client, server):
    with pytest.raises(openai.InternalServerError, match=r"ad-test-9-1-9: unreadable adapter_model\.safetensors"):
        client.completions.create(model="dn-9", prompt="x", max_tokens=2)
    state = metrics(server)
    assert state["adapter_cache_load_failures_total"] >= 1
    assert "ad-test-9-1-9" not in server.service.engine.cache.state().adapters
    assert client.completions.create(model="dn-1", prompt="x", max_tokens=2, temperature=0).usage.completion_tokens == 2


def test_malformed_bodies_and_headers(server):
    cases = [
        (b"{not json", {}, "not valid JSON"),
        (json.dumps({"prompt": "x"}).encode(), {}, "model"),
        (json.dumps({"model": "dn-1", "prompt": "x", "temperature": 9}).encode(), {}, "temperature"),
        (json.dumps({"model": "dn-1", "prompt": "x"}).encode(), {"X-Payable-Caller": "0x123"}, "X-Payable-Caller"),
        (json.dumps({"model": "dn-1", "prompt": "x"}).encode(), {"X-Request-Id": "bad id!"}, "x-request-id"),
    ]
    for body, headers, needle in cases:
        response = httpx.post(server.url + "/v1/completions", content=body,
                              headers={"content-type": "application/json", **headers})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and needle.lower() in error["message"].lower()
    assert httpx.get(server.url + "/v1/nothing").json()["error"]["type"] == "not_found_error"


def test_client_disconnect_mid_stream_stops_the_generation(server):
    body = {"model": "dn-1", "prompt": "a long story", "max_tokens": 100, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"X-Request-Id": "gone-1"}) as response:
        data = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line)
            if len(data) == 3:
                break
    event = usage_of(server, "gone-1")
    assert event["finish_reason"] == "cancelled" and 3 <= event["completion_tokens"] < 100
    for _ in range(200):
        if server.service.engine.batcher.running == 0:
            break
        time.sleep(0.02)
    assert server.service.engine.batcher.running == 0
    assert httpx.get(server.url + "/v1/models").status_code == 200


@pytest.mark.slow
def test_payable_serve_and_status_from_the_command_line(settings, tmp_path):
    port = services.free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    cli = [sys.executable, "-c", "from payable.cli import main; main()", "--data-dir", str(settings.data_dir)]
    process = subprocess.Popen([*cli, "serve", "--port", str(port), "--pin", "dn-2"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(600):
            if services.port_open(port) or process.poll() is not None:
                break
            time.sleep(0.1)
        assert services.port_open(port), process.stderr.read().decode() if process.poll() is not None else ""
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        completion = client.completions.create(model="dn-2", prompt="hi", max_tokens=3, temperature=0)
        assert completion.usage.completion_tokens == 3
        status = subprocess.run([*cli, "serve", "--status"], env=env, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        assert f"127.0.0.1:{port}" in status.stdout and "10 models" in status.stdout
        assert "adapter_cache_pinned" in status.stdout and "usage_events_pending" in status.stdout
        busy = subprocess.run([*cli, "serve", "--port", str(port)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert busy.returncode == 1 and "already in use" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert not (settings.run_dir / "serve.json").exists()
    gone = subprocess.run([*cli, "serve", "--status"], env=env, capture_output=True, text=True, timeout=120)
    assert gone.returncode == 1 and "no server is running" in gone.stderr
