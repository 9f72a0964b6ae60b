"""The ingester through a misbehaving RPC endpoint: refused and failing ranges, a timeout, bad logs.

A small local HTTP proxy sits between the ingester and anvil. It refuses eth_getLogs ranges wider than
four blocks the way hosted providers do, answers every third remaining call with a 502, stalls one call past
the client's timeout, and slips two logs into the answer for one block: one with an event signature no
payable contract declares, one whose data is cut short. The run must complete with every real fact once
and each bad log in the dead-letter topic.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from eth_utils import keccak

from payable import services
from pipelines.ingest import ingest_until_head
from schemas import events, topics
from tests.test_ingest_support import FAST, canonical_submissions, contribute, open_datanet, read_facts, read_topic

MAX_RANGE = 4
UNKNOWN_TOPIC = "0x" + keccak(text="SomethingElse(uint256)").hex()


class FlakyNode:
    """The proxy's behaviour and what it saw; ``bad_block`` is where the bad logs go."""

    def __init__(self, upstream: str, stall_s: float):
        self.upstream, self.stall_s = upstream, stall_s
        self.seen: Counter = Counter()
        self.bad_block: int | None = None
        self.lock = threading.Lock()

    def answer(self, request: dict) -> tuple[int, object]:
        if not isinstance(request, dict) or request.get("method") != "eth_getLogs":  # batches pass through
            return 200, requests.post(self.upstream, json=request, timeout=30).json()
        query = request["params"][0]
        low, high = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        with self.lock:
            self.seen["calls"] += 1
            if high - low + 1 > MAX_RANGE:
                self.seen["too_many"] += 1
                return 200, {"jsonrpc": "2.0", "id": request["id"],
                             "error": {"code": -32005, "message": "query returned more than 10000 results"}}
            if self.seen["stalled"] == 0:
                self.seen["stalled"] += 1
                stall = True
            else:
                stall = False
                self.seen["fit"] += 1
                if self.seen["fit"] % 3 == 0:
                    self.seen["failed"] += 1
                    return 502, {"error": "bad gateway"}
        if stall:
            time.sleep(self.stall_s)
        reply = requests.post(self.upstream, json=request, timeout=30).json()
        if self.bad_block is not None and low <= self.bad_block <= high:
            reply["result"] = reply["result"] + self._bad_logs(reply["result"])
        return 200, reply

    def _bad_logs(self, logs: list[dict]) -> list[dict]:
        real = next(log for log in logs if int(log["blockNumber"], 16) == self.bad_block)
        unknown = {**real, "topics": [UNKNOWN_TOPIC, *real["topics"][1:]], "logIndex": "0x90"}
        truncated = {**real, "data": real["data"][:2 + 64 * 5], "logIndex": "0x91"}  # the string itself is gone
        return [unknown, truncated]


@pytest.fixture
def flaky(stack):
    node = FlakyNode(stack.rpc_url, stall_s=1.5)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, body = node.answer(request)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up on a stalled call

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", services.free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    node.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield node
    server.shutdown()
    server.server_close()


def test_refused_failing_and_stalled_ranges_and_bad_logs_end_in_retries_and_dead_letters(
        stack, chain, deployment, flaky):
    datanet = open_datanet(chain, deployment, 12)
    contribute(stack, deployment, datanet, range(12))
    flaky.bad_block = chain.w3.eth.block_number - 5

    report = ingest_until_head(replace(stack, rpc_url=flaky.url), deployment, replace(FAST, rpc_timeout_s=1.0))

    assert flaky.seen["too_many"] >= 1 and flaky.seen["failed"] >= 1 and flaky.seen["stalled"] == 1
    assert report.facts == {"ContributionSubmitted": 12, "DatanetCreated": 1}
    assert dict(read_facts(stack).live_submissions()) == {
        fact: 1 for fact in canonical_submissions(chain, deployment).items()}
    assert report.dead_letters == 2
    letters = read_topic(stack, topics.CHAIN_DLQ).of(events.DEAD_LETTER)
    by_index = {json.loads(letter["raw"])["logIndex"]: letter for letter in letters}
    assert sorted(by_index) == ["0x90", "0x91"]
    assert "unknown event signature" in by_index["0x90"]["error"]
    assert "string of 77 bytes overruns the data" in by_index["0x91"]["error"]
    assert all(letter["origin"] == "ingest" and hex(flaky.bad_block) in letter["source"] for letter in letters)

    again = ingest_until_head(replace(stack, rpc_url=flaky.url), deployment, replace(FAST, rpc_timeout_s=1.0))
    assert again.events == 0 and again.dead_letters == 0
    assert len(read_topic(stack, topics.CHAIN_DLQ).records) == 2, "dead letters are written once too"
