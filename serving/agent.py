"""The serving agent: the key a server signs its usage events with, and whether the AgentRegistry lists it.

A ``payable serve`` instance is an agent: it stakes OPEN under an address (``payable agents register``) and every
usage event it writes carries that address and its EIP-191 signature over ``schemas.usage.usage_digest``. The
pipeline pays only signed usage of a listed, never-slashed agent, so a server whose agent is not staked still
serves, but its usage earns nobody anything; ``/metrics`` and ``payable serve --status`` say so.

The key comes from ``--agent-key-file`` or the environment like every other role's (``payable.keys``); only
against the embedded local chain does it fall back to a development account.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

import contracts
from payable.chain import Chain, Deployment
from payable.keys import MissingKeyError, Role, load_account, load_key_file
from payable.settings import Settings
from schemas.usage import usage_digest

log = logging.getLogger(__name__)


class ServingAgent:
    """Signs usage events as ``account``; knows (re-read at most every ``ttl_s``) whether it is staked."""

    def __init__(self, account: LocalAccount, settings: Settings | None = None, ttl_s: float = 10.0) -> None:
        self.account, self.settings, self.ttl_s = account, settings, ttl_s
        self.address = account.address.lower()
        self._lock = threading.Lock()
        self._checked: tuple[float, bool | None] | None = None

    def sign(self, event: dict) -> dict:
        """``event`` with ``agent`` set to this agent and ``signature`` over the result's digest."""
        signed = {**event, "agent": self.address, "signature": None}
        signature = self.account.sign_message(encode_defunct(primitive=usage_digest(signed))).signature
        return {**signed, "signature": "0x" + bytes(signature).hex()}

    def staked(self) -> bool | None:
        """Whether the AgentRegistry lists this agent now; None when that cannot be told (no deployment, no
        AgentRegistry in it, or the chain does not answer)."""
        with self._lock:
            if self._checked is not None and time.monotonic() - self._checked[0] < self.ttl_s:
                return self._checked[1]
            value = self._read_staked()
            self._checked = (time.monotonic(), value)
            return value

    def _read_staked(self) -> bool | None:
        if self.settings is None:
            return None
        try:
            deployment = Deployment.load(self.settings.deployment_file)
            if not deployment.agents:
                return None
            registry = Chain(self.settings.rpc_url, timeout_s=2.0).contract(contracts.AGENT_REGISTRY, deployment.agents)
            return bool(registry.functions.isStaked(self.account.address).call())
        except Exception as exc:  # noqa: BLE001 - a status line, never a failed request
            log.warning("cannot tell whether agent %s is staked: %s", self.address, exc)
            return None


def load_agent(settings: Settings, key_file: Path | None = None) -> ServingAgent | None:
    """The server's agent from ``key_file``, else from the environment (``PAYABLE_AGENT_KEY``/``_KEYSTORE``), else
    on the local chain the development account; None (usage written unsigned, never paid) when no key is set for a
    remote chain."""
    try:
        account = load_key_file(Role.AGENT, key_file) if key_file else load_account(
            Role.AGENT, local_chain=settings.local_chain)
    except MissingKeyError:
        log.warning("no serving agent key (PAYABLE_AGENT_KEY or --agent-key-file): usage events are unsigned and "
                    "will not be paid")
        return None
    return ServingAgent(account, settings)
