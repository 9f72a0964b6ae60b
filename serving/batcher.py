"""Continuous batching: the scheduler thread that owns the running batch, and nothing else does.

Each iteration: admit waiting requests into free rows (one prefill forward over all joiners, mixed
adapters), then one decode forward over every running row (mixed adapters, one pass over the shared base
weights), then let finished rows leave (their cache row is refilled by the last row, their LoRA slot
released). Requests therefore join and leave between decode steps; nobody waits for a batch to drain.

The thread only ever sees requests whose adapters are already loaded (the engine awaits the cache before
submitting), so a slow adapter load never stalls a decode step. An exception inside a step ends the
requests of that step with ``finish="error"`` and the loop goes on: a bad request never kills the worker.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from serving.lora import LoraAdapter
from serving.model import Runner
from serving.punica import LoraSlots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()
    want_logits: bool = False
    """Report each step's next-token logits with the token (for ``logprobs`` and the equality tests)."""


@dataclass(frozen=True)
class StepOutput:
    """One event of a request: a sampled token, and/or the reason it finished."""

    token: int | None
    finish: str | None = None
    """``stop`` (a stop token), ``length`` (max_tokens or the context), ``cancelled``, ``error``."""
    logits: torch.Tensor | None = None
    error: str | None = None


@dataclass(eq=False)
class Generation:
    """A request as the batcher sees it; ``sink`` is called from the batcher thread with each output."""

    prompt: list[int]
    adapter: LoraAdapter | None
    params: SamplingParams
    sink: Callable[[StepOutput], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Leave at the next step boundary (client gone, stop string seen)."""
        self.cancelled.set()


@dataclass(eq=False)
class _Row:
    gen: Generation
    slot: int
    generator: torch.Generator | None
    length: int = 0
    """Tokens in the KV cache."""
    last: int = 0
    generated: int = 0
    done: bool = False


@dataclass
class BatcherStats:
    steps: int = 0
    prefills: int = 0
    tokens: int = 0
    rows_stepped: int = 0
    errors: int = 0


class Batcher:
    """Runs :class:`Generation` requests in continuous mixed-adapter batches on its own thread."""

    def __init__(self, runner: Runner, slots: LoraSlots) -> None:
        self.runner, self.slots = runner, slots
        self.max_batch = runner.max_batch
        self.stats = BatcherStats()
        self._waiting: deque[Generation] = deque()
        self._rows: list[_Row] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def submit(self, gen: Generation) -> None:
        with self._cond:
            self._waiting.append(gen)
            self._cond.notify()

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._waiting and not self._rows and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                joiners = [self._waiting.popleft() for _ in range(min(len(self._waiting),
                                                                     self.max_batch - len(self._rows)))]
            self._step(joiners)
        for row in self._rows:
            row.gen.sink(StepOutput(None, "cancelled"))
        for gen in self._waiting:
            gen.sink(StepOutput(None, "cancelled"))

    def _step(self, joiners: list[Generation]) -> None:
        with torch.inference_mode():
            for row in self._rows:
                if row.gen.cancelled.is_set():
                    self._finish(row, "cancelled")
            self._leave()
            joiners = [g for g in joiners if not self._cancelled_before_start(g)]
            if joiners:
                self._guarded(self._rows_of(joiners), self._prefill)
            self._leave()
            if self._rows:
                self._guarded(self._rows, self._decode)
            self._leave()

    def _cancelled_before_start(self, gen: Generation) -> bool:
        if gen.cancelled.is_set():
            gen.sink(StepOutput(None, "cancelled"))
            return True
        return False

    def _rows_of(self, joiners: list[Generation]) -> list[_Row]:
        rows = []
        for gen in joiners:
            seed = gen.params.seed
            generator = None
            if gen.params.temperature > 0:
                generator = torch.Generator(device=self.runner.device)
                generator.manual_seed(seed) if seed is not None else generator.seed()
            rows.append(_Row(gen, self.slots.acquire(gen.adapter), generator))
        return rows

    def _guarded(self, rows: list[_Row], step: Callable[[list[_Row]], None]) -> None:
        try:
            step(rows)
        except Exception as exc:
            log.exception("batch step failed")
            self.stats.errors += 1
            for row in rows:
                if not row.done:
                    self._finish(row, "error", error=f"{type(exc).__name__}: {exc}")
            if rows and rows[0] not in self._rows:  # joiners that never got a cache row
                for row in rows:
                    self.slots.release(row.slot)

    def _prefill(self, rows: list[_Row]) -> None:
        first = len(self._rows)
        slot_ids = torch.tensor([r.slot for r in rows], device=self.runner.device)
        logits = self.runner.prefill(first, [r.gen.prompt for r in rows], self.slots, slot_ids)
        self._rows.extend(rows)
        self.stats.prefills += 1
        for row, row_logits, greedy in zip(rows, logits, logits.argmax(-1).tolist(), strict=True):
            row.length = len(row.gen.prompt)
            self._emit(row, row_logits, greedy)

    def _decode(self, rows: list[_Row]) -> None:
        device = self.runner.device
        tokens = torch.tensor([r.last for r in rows], device=device)
        lengths = torch.tensor([r.length for r in rows], device=device)
        slot_ids = torch.tensor([r.slot for r in rows], device=device)
        logits = self.runner.decode(tokens, lengths, self.slots, slot_ids)
        self.stats.steps += 1
        self.stats.rows_stepped += len(rows)
        for row, row_logits, greedy in zip(rows, logits, logits.argmax(-1).tolist(), strict=True):
            row.length += 1
            self._emit(row, row_logits, greedy)

    def _emit(self, row: _Row, logits: torch.Tensor, greedy: int) -> None:
        params = row.gen.params
        token = greedy if row.generator is None else _sample(logits, params, row.generator)
        row.last = token
        row.generated += 1
        self.stats.tokens += 1
        finish = None
        if token in params.stop_token_ids:
            finish = "stop"
        elif row.generated >= params.max_tokens or row.length + 1 >= self.runner.n_positions:
            finish = "length"
        row.gen.sink(StepOutput(token, finish, logits.clone() if params.want_logits else None))
        if finish is not None:
            row.done = True

    def _finish(self, row: _Row, reason: str, error: str | None = None) -> None:
        row.done = True
        row.gen.sink(StepOutput(None, reason, error=error))

    def _leave(self) -> None:
        """Finished rows leave; the last running row moves into each hole (cache rows stay 0..n-1)."""
        for i in range(len(self._rows) - 1, -1, -1):
            row = self._rows[i]
            if not row.done:
                continue
            last = len(self._rows) - 1
            if i != last:
                moved = self._rows[last]
                self.runner.move_row(last, i, moved.length)
                self._rows[i] = moved
            self._rows.pop()
            self.slots.release(row.slot)


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Nucleus sampling at the row's temperature from its own seeded generator (greedy rows never get here)."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
