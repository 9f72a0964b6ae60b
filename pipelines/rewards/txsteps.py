"""Exactly-once chain transactions through an outbox: intent on the log first, then send, then confirm.

A ``Step`` is one effect on the chain (fund the distributor, publish a root, slash a stake, push a batch of
claims) plus a way to read from the chain whether that effect is already in place. ``TxRunner.run``:

1. the chain says the effect is in place -> record ``done`` and stop (or says it can never happen, e.g. a
   stake already returned to its contributor -> ``skipped``);
2. an earlier intent is still open (no confirmed/failed/superseded after it) -> settle it: use its receipt
   if it was mined; if the sender's nonce has moved past it without it, another transaction took that
   nonce -> ``superseded``; otherwise re-broadcast the very same signed bytes (same hash, so sending twice
   is harmless) and wait for the receipt;
3. otherwise sign a transaction at the sender's next nonce, record ``intent`` (nonce, hash, signed bytes)
   and wait for the broker's acknowledgement, only then send; record ``sent``, wait for the receipt,
   record ``confirmed`` or ``failed``; go back to 1.

Every retry of an open intent reuses its nonce (a fee bump after "replacement transaction underpriced"
re-signs at the same nonce), so at most one attempt can ever be mined. RPC failures are retried with
backoff; if they persist the run stops with the intent on the log, and the next run resumes at 2.

The runner is not tied to epochs: a ``TxScope`` names the outbox event type and the fields of its records
(the rewards emitter's epochs, the commitments publisher's commitments).

For the kill tests, ``PAYABLE_REWARDS_CRASH_AT=<step kind>:<point>`` (points: after_intent, after_send,
after_receipt) SIGKILLs the process at that point: the same crash as ``kill -9``, at a chosen moment.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError

from payable.chain import Chain, describe_revert
from pipelines.rewards import outbox
from schemas import rewards as schema
from schemas.events import EventType

CRASH_ENV = "PAYABLE_REWARDS_CRASH_AT"
RPC_ATTEMPTS = 6
RECEIPT_TIMEOUT_S = 120.0
MAX_ROUNDS = 4
FEE_BUMP = 1.25
CLOSING_STATES = ("confirmed", "failed", "superseded")


class ChainUnavailable(RuntimeError):
    """The RPC endpoint kept failing; the outbox holds where the step stands, so a rerun resumes it."""


@dataclass(frozen=True)
class Step:
    """One effect on the chain, done at most once."""

    name: str                        # fund | publish | slash-<id> | push-<batch>
    sender: LocalAccount
    check: Callable[[], str | None]  # why the effect is already in place, or None
    call: Callable[[], Any]          # the contract call to make now (None: nothing to do)
    blocked: Callable[[], str | None] = lambda: None  # why the effect can never happen (-> skipped)


@dataclass(frozen=True)
class StepOutcome:
    name: str
    state: str   # done | skipped | failed
    detail: str
    tx_hashes: tuple[str, ...]


def rpc(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls ``fn`` and retries connection failures with exponential backoff."""
    attempt = 1
    while True:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == RPC_ATTEMPTS:
                raise ChainUnavailable(f"RPC unreachable after {RPC_ATTEMPTS} attempts: {exc}") from exc
            time.sleep(0.25 * 2 ** (attempt - 1))
            attempt += 1


def crash_point(step: str, point: str) -> None:
    if os.environ.get(CRASH_ENV) == f"{step.split('-')[0]}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class TxScope:
    """Whose transactions a runner records: the outbox event type, and the fields that name its records
    (in the order they enter the states' event ids)."""

    event_type: EventType
    fields: dict[str, Any]

    @classmethod
    def epoch(cls, epoch_id: int, distributor: str) -> TxScope:
        """A reward epoch's steps at one distributor, on the rewards outbox."""
        return cls(schema.REWARD_TX_STATE, {"distributor": distributor.lower(), "epoch_id": epoch_id})


class TxRunner:
    """Runs the steps of one scope (e.g. an epoch) against one chain, recording each state on its outbox."""

    def __init__(self, chain: Chain, writer: outbox.OutboxWriter, scope: TxScope, history: list[outbox.Entry]):
        self.chain, self.w3, self.writer, self.scope = chain, chain.w3, writer, scope
        self.states = [e.record for e in history if e.type == scope.event_type.name
                       and e.record["chain_id"] == chain.chain_id
                       and all(e.record[k] == v for k, v in scope.fields.items())]

    def run(self, step: Step) -> StepOutcome:
        for _ in range(MAX_ROUNDS):
            reason = rpc(step.check)
            if reason is not None:
                self._record(step, "done", detail=reason)
                return StepOutcome(step.name, "done", reason, self._hashes(step))
            obstacle = rpc(step.blocked)
            if obstacle is not None:
                self._record(step, "skipped", detail=obstacle)
                return StepOutcome(step.name, "skipped", obstacle, self._hashes(step))
            if not self._open_intents(step):
                stopped = self._new_intent(step)
                if stopped is not None:
                    state, detail = stopped
                    return StepOutcome(step.name, state, detail, self._hashes(step))
            self._settle(step, self._open_intents(step))
        last = self._states(step)[-1]
        return StepOutcome(step.name, "failed", f"gave up after {MAX_ROUNDS} rounds: last state {last['state']} "
                           f"{last['detail']}", self._hashes(step))

    # ---- outbox state --------------------------------------------------------------------------

    def _states(self, step: Step) -> list[dict]:
        return [s for s in self.states if s["step"] == step.name]

    def _hashes(self, step: Step) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s["tx_hash"] for s in self._states(step) if s["tx_hash"]))

    def _open_intents(self, step: Step) -> list[dict]:
        """Intents whose nonce has no closing state yet, oldest first (several = fee bumps of one nonce)."""
        states = self._states(step)
        closed = {s["nonce"] for s in states if s["state"] in CLOSING_STATES}
        return [s for s in states if s["state"] == "intent" and s["nonce"] not in closed]

    def _record(self, step: Step, state: str, *, nonce: int | None = None, tx_hash: str | None = None,
                raw_tx: str | None = None, block_number: int | None = None, detail: str = "") -> None:
        record = {
            "event_id": outbox.derived_id("tx-state", self.chain.chain_id, *self.scope.fields.values(),
                                          step.name, state, nonce, tx_hash, detail),
            **self.scope.fields, "chain_id": self.chain.chain_id,
            "step": step.name, "state": state, "sender": step.sender.address.lower(), "nonce": nonce,
            "tx_hash": tx_hash, "raw_tx": raw_tx, "block_number": block_number, "detail": detail,
        }
        if state in ("done", "skipped") and any(s["state"] == state for s in self._states(step)):
            return
        self.writer.append(self.scope.event_type, [record])
        self.states.append(record)

    # ---- transactions --------------------------------------------------------------------------

    def _new_intent(self, step: Step) -> tuple[str, str] | None:
        """Signs the step's transaction and records the intent; else (final state, why) of the step."""
        call = step.call()
        if call is None:
            self._record(step, "done", detail="nothing to send")
            return "done", "nothing to send"
        nonce = rpc(self.w3.eth.get_transaction_count, step.sender.address, "pending")
        params = {"from": step.sender.address, "chainId": self.chain.chain_id, "nonce": nonce}
        try:
            tx = rpc(call.build_transaction, params)
        except (ContractCustomError, ContractLogicError) as exc:
            detail = f"would revert: {describe_revert(exc)}"
            self._record(step, "failed", detail=detail)  # no nonce: none was used
            return "failed", detail
        self._sign_and_record(step, tx)
        crash_point(step.name, "after_intent")
        return None

    def _sign_and_record(self, step: Step, tx: dict) -> dict:
        signed = step.sender.sign_transaction(tx)
        self._record(step, "intent", nonce=tx["nonce"], tx_hash="0x" + signed.hash.hex(),
                     raw_tx="0x" + signed.raw_transaction.hex(), detail=f"maxFeePerGas={tx.get('maxFeePerGas')}")
        return self.states[-1]

    def _settle(self, step: Step, intents: list[dict]) -> None:
        """Brings the open intents of one nonce to a closing state (see the module docstring, point 2)."""
        nonce = intents[0]["nonce"]
        if self._closed_by_receipt(step, intents) or self._closed_by_nonce(step, nonce):
            return
        sent = self._broadcast(step, intents[-1])
        if sent is None:
            return  # the nonce was used meanwhile: the next round settles it from receipts
        self._record(step, "sent", nonce=nonce, tx_hash=sent["tx_hash"])
        crash_point(step.name, "after_send")
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while not self._closed_by_receipt(step, self._open_intents(step)):
            if self._closed_by_nonce(step, nonce):
                return
            if time.monotonic() > deadline:
                raise ChainUnavailable(f"{step.name}: tx {sent['tx_hash']} not mined in {RECEIPT_TIMEOUT_S:.0f} s; "
                                       "rerun to resume it")
            time.sleep(0.05)

    def _closed_by_nonce(self, step: Step, nonce: int) -> bool:
        """True once the sender's mined nonce passed ``nonce``: ours was mined (receipt) or another tx took it."""
        if rpc(self.w3.eth.get_transaction_count, step.sender.address, "latest") <= nonce:
            return False
        if not self._closed_by_receipt(step, self._open_intents(step)):  # mined between the two reads?
            self._record(step, "superseded", nonce=nonce, detail="nonce used by another transaction")
        return True

    def _broadcast(self, step: Step, intent: dict, bumps: int = 0) -> dict | None:
        """Sends the intent's signed bytes; after a fee rejection, a re-signed intent with higher fees."""
        try:
            rpc(self.w3.eth.send_raw_transaction, intent["raw_tx"])
            return intent
        except (Web3RPCError, ValueError) as exc:
            message = str(exc).lower()
            if any(s in message for s in ("already known", "already imported", "known transaction")):
                return intent
            if "nonce too low" in message:
                return None
            if ("underpriced" not in message and "fee too low" not in message) or bumps >= MAX_ROUNDS:
                raise
        tx = TypedTransaction.from_bytes(HexBytes(intent["raw_tx"])).as_dict()
        for key in ("v", "r", "s"):
            tx.pop(key)
        tx["maxFeePerGas"] = int(tx["maxFeePerGas"] * FEE_BUMP) + 1
        tx["maxPriorityFeePerGas"] = int(tx["maxPriorityFeePerGas"] * FEE_BUMP) + 1
        return self._broadcast(step, self._sign_and_record(step, tx), bumps + 1)

    def _closed_by_receipt(self, step: Step, intents: list[dict]) -> bool:
        """Records the receipt of whichever of ``intents`` was mined; False if none was.

        The one place a receipt is recorded (after the send, when settling an intent found open, and when
        the nonce moved), so the ``after_receipt`` crash point fires on every one of those paths."""
        for intent in intents:
            try:
                receipt = rpc(self.w3.eth.get_transaction_receipt, intent["tx_hash"])
            except TransactionNotFound:
                continue
            crash_point(step.name, "after_receipt")
            state = "confirmed" if receipt["status"] == 1 else "failed"
            self._record(step, state, nonce=intent["nonce"], tx_hash=intent["tx_hash"],
                         block_number=receipt["blockNumber"], detail="" if state == "confirmed" else "reverted")
            return True
        return False
