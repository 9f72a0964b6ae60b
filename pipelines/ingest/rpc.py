"""Raw JSON-RPC for the ingester: one keep-alive HTTP connection, batched calls, errors that say which.

web3.py formats every result through layers of middleware (several µs per log field); the ingester reads
hundreds of thousands of logs, so it talks JSON-RPC itself and gets plain dicts of hex strings back. Any
node URL works (invariant 7). Failures come in two kinds the caller treats differently: ``RpcError`` (the
node answered with an error, e.g. "query returned more than 10000 results") and ``RpcUnavailable``
(no usable answer: refused, timed out, not JSON).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import requests


class RpcError(RuntimeError):
    """The node answered a call with a JSON-RPC error."""

    def __init__(self, method: str, error: dict):
        super().__init__(f"{method}: {error.get('message', error)} (code {error.get('code')})")
        self.code = error.get("code")


class RpcUnavailable(RuntimeError):
    """The node gave no usable answer (connection refused, timeout, HTTP error, not JSON)."""


class RpcClient:
    """A JSON-RPC client over one HTTP session; safe to create in a worker process."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._ids = itertools.count(1)

    def _post(self, payload: Any) -> Any:
        try:
            response = self._session.post(self.url, data=json.dumps(payload), timeout=self.timeout_s,
                                          headers={"Content-Type": "application/json"})
            response.raise_for_status()
            return json.loads(response.content)
        except (requests.RequestException, ValueError) as exc:
            raise RpcUnavailable(f"{self.url}: {exc}") from exc

    def call(self, method: str, params: list) -> Any:
        """One call; returns its ``result``."""
        reply = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        if not isinstance(reply, dict):
            raise RpcUnavailable(f"{method}: unexpected reply {str(reply)[:200]}")
        if "error" in reply:
            raise RpcError(method, reply["error"])
        return reply.get("result")

    def batch(self, method: str, params_list: list[list]) -> list:
        """The same method with many parameter lists in one HTTP request; results in request order."""
        if not params_list:
            return []
        first = next(self._ids)
        payload = [{"jsonrpc": "2.0", "id": first + i, "method": method, "params": params}
                   for i, params in enumerate(params_list)]
        self._ids = itertools.count(first + len(payload))
        replies = self._post(payload)
        if not isinstance(replies, list) or len(replies) != len(payload):
            raise RpcUnavailable(f"{method}: batch of {len(payload)} answered with {str(replies)[:200]}")
        by_id = {reply.get("id"): reply for reply in replies}
        results = []
        for i in range(len(payload)):
            reply = by_id.get(first + i, {})
            if "error" in reply:
                raise RpcError(method, reply["error"])
            if "result" not in reply:
                raise RpcUnavailable(f"{method}: batch reply lacks id {first + i}")
            results.append(reply["result"])
        return results

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", []), 16)

    def headers(self, numbers: list[int]) -> list[dict]:
        """Block headers (no transactions) of ``numbers``, batched; a missing block is an error."""
        blocks = self.batch("eth_getBlockByNumber", [[hex(n), False] for n in numbers])
        for number, block in zip(numbers, blocks, strict=True):
            if block is None:
                raise RpcUnavailable(f"block {number} is not available (yet)")
        return blocks

    def get_logs(self, addresses: list[str], from_block: int, to_block: int) -> list[dict]:
        """Every log of ``addresses`` in [from_block, to_block], in chain order."""
        return self.call("eth_getLogs", [{"address": addresses, "fromBlock": hex(from_block),
                                          "toBlock": hex(to_block)}])
