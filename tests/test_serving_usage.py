"""Usage events on the real broker: one per finished request, none lost or doubled across a broker outage."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from payable import kafka_log, services
from payable.keys import Role, dev_account
from schemas import events, topics
from schemas.usage import usage_signer
from serving.server import ServeOptions, ServerThread, build
from serving.usage import usage_id
from tests.serving_fixtures import write_adapter

CALLER = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65"


def wait_for(condition, timeout_s: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.own_broker
def test_every_request_leaves_one_usage_event_through_a_broker_outage(stack):
    write_adapter(stack.adapters_dir, 1, 3, seed=1)
    write_adapter(stack.adapters_dir, 2, 1, seed=2)
    broker = next(s for s in services.local_services(stack) if s.name == "broker")
    service = build(stack, ServeOptions(max_batch=4))
    usage = service.usage
    with ServerThread(service) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

        def complete(request_id: str, model: str = "dn-1") -> None:
            client.completions.create(model=model, prompt="hello there", max_tokens=4,
                                      extra_headers={"X-Request-Id": request_id, "X-Payable-Caller": CALLER})

        for i in range(3):
            complete(f"before-{i}")
        wait_for(lambda: usage.state()["delivered"] == 3, what="delivery before the outage")

        stream = client.completions.create(model="dn-1+dn-2", prompt="a stream", max_tokens=40, stream=True,
                                           temperature=0, stream_options={"include_usage": True},
                                           extra_headers={"X-Request-Id": "mid-stream"})
        received = [next(stream) for _ in range(3)]
        services.stop(broker, stack)  # the broker process, by PID, while the stream is running
        received += list(stream)
        assert "".join(c.choices[0].text for c in received if c.choices)
        for i in range(4):
            complete(f"outage-{i}", model="dn-2")
        wait_for(lambda: usage.state()["send_failures"] > 0, what="a failed delivery")
        text = httpx.get(server.url + "/metrics").text
        # the 4 outage events wait; the streamed one too unless it was delivered before the broker went down
        # (a real Kafka broker takes a moment to stop while the server finishes the stream on its own)
        pending = usage.state()["pending"]
        assert pending in (4, 5) and f"payable_serve_usage_events_pending {pending}\n" in text
        assert "payable_serve_usage_send_failures_total 0\n" not in text

        services.start(broker, stack)
        wait_for(lambda: usage.state()["pending"] == 0, what="the buffer to drain after the restart")
        assert usage.state()["delivered"] == 8

    expected = {f"before-{i}" for i in range(3)} | {"mid-stream"} | {f"outage-{i}" for i in range(4)}
    found = [events.decode(m.value, m.headers)[1] for m in kafka_log.read_topic(stack.kafka_bootstrap, topics.USAGE)]
    assert sorted(e["request_id"] for e in found) == sorted(expected)  # every one, once
    by_id = {e["request_id"]: e for e in found}
    assert all(e["event_id"] == usage_id(r) for r, e in by_id.items())
    agent = dev_account(Role.AGENT.value).address.lower()  # the local chain's serving agent
    assert all(e["agent"] == usage_signer(e) == agent for e in found), "every event is signed by the serving agent"
    streamed = by_id["mid-stream"]
    assert streamed["adapter_ids"] == ["ad-test-1-3-1", "ad-test-2-1-2"] and streamed["datanet_ids"] == [1, 2]
    assert streamed["dataset_versions"] == [3, 1] and streamed["adapter_weights"] == [0.5, 0.5]
    assert streamed["completion_tokens"] == received[-1].usage.completion_tokens >= 3 and streamed["caller"] is None
    assert by_id["outage-0"]["caller"] == CALLER and by_id["outage-0"]["completion_tokens"] == 4
    assert all(e["latency_ms"] > 0 and e["prompt_tokens"] > 0 for e in found)
