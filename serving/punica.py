"""Mixed-adapter LoRA in one pass: a slot table of resident adapters and a batched gather-matmul over it.

In the spirit of Punica's BGMV kernel (and vLLM's ``punica_wrapper``), written with torch ops so any
device torch runs on runs it: for each target module the factors of the adapters in the running batch
are stacked into padded tensors ``A[slot]`` (r_max, in) and ``B[slot]`` (out, r_max); every batch row
carries the slot of its adapter, and one ``index_select`` + two ``torch.bmm`` give each row its own
``x @ A[slot].T @ B[slot].T``. The cost is that of one rank-r_max LoRA per row whatever the number of
distinct adapters, where peft's ``adapter_names`` loops over the adapters present. Zero padding (rank
below r_max, a module an adapter lacks, slot 0 for base-model rows) contributes exact zeros.

Slots are shared by rows of the same adapter (reference counted) and freed when its last row leaves,
so a table of ``max_batch + 1`` slots never runs out. A module gets stacks once some adapter targets
it (the padded rank grows with the largest adapter seen). Swapping this torch code for a fused kernel is a
change to this file only.
"""

from __future__ import annotations

import torch

from serving.lora import LoraAdapter

BASE_SLOT = 0
"""Slot 0 holds zeros: rows served by the base model alone."""


class LoraSlots:
    """Padded, stacked LoRA factors of the adapters the batch uses, one slot per adapter."""

    def __init__(self, shapes: dict[str, tuple[int, int]], num_slots: int, rank: int = 8,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.shapes = dict(shapes)
        self.num_slots = num_slots
        self.dtype, self.device = dtype, torch.device(device)
        self.rank = rank
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        self._slot_of: dict[str, int] = {}
        self._refs = [0] * num_slots
        self._free = list(range(num_slots - 1, BASE_SLOT, -1))

    def _stack(self, module: str, rank: int) -> None:
        """(Re)allocates one module's stacks at padded rank ``rank``, keeping the resident factors."""
        fan_in, fan_out = self.shapes[module]
        a = torch.zeros(self.num_slots, rank, fan_in, dtype=self.dtype, device=self.device)
        b = torch.zeros(self.num_slots, fan_out, rank, dtype=self.dtype, device=self.device)
        if module in self.a:
            kept = self.a[module].shape[1]
            a[:, :kept] = self.a[module]
            b[:, :, :kept] = self.b[module]
        self.a[module], self.b[module] = a, b

    def _fit(self, adapter: LoraAdapter) -> None:
        """Stacks exist for every module the adapter targets (a module no adapter targets costs nothing),
        all at a padded rank no smaller than the adapter's."""
        if adapter.rank > self.rank:
            self.rank = adapter.rank
            for module in list(self.a):
                self._stack(module, self.rank)
        for module in adapter.factors:
            if module not in self.a:
                self._stack(module, self.rank)

    def acquire(self, adapter: LoraAdapter | None) -> int:
        """The slot holding ``adapter`` (copied in if not resident); ``None`` means the base model."""
        if adapter is None:
            return BASE_SLOT
        slot = self._slot_of.get(adapter.key)
        if slot is None:
            if not self._free:
                raise RuntimeError("no free LoRA slot: more distinct adapters than slots in one batch")
            slot = self._free.pop()
            self._fit(adapter)
            for module in self.a:  # copy what the adapter has, zero only what it lacks (rank tail, modules)
                a, b = adapter.factors.get(module, (None, None))
                r = 0 if a is None else a.shape[0]
                if r:
                    self.a[module][slot, :r].copy_(a)
                    self.b[module][slot, :, :r].copy_(b)
                if r < self.rank:
                    self.a[module][slot, r:].zero_()
                    self.b[module][slot, :, r:].zero_()
            self._slot_of[adapter.key] = slot
        self._refs[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        """One row using ``slot`` left the batch; the slot is freed with its last row."""
        if slot == BASE_SLOT:
            return
        self._refs[slot] -= 1
        if self._refs[slot] == 0:
            key = next(k for k, s in self._slot_of.items() if s == slot)
            del self._slot_of[key]
            self._free.append(slot)

    @property
    def resident(self) -> int:
        """How many distinct adapters the running batch uses now."""
        return len(self._slot_of)

    def delta(self, module: str, x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor | None:
        """BGMV: row i of ``x`` (rows, seq, in) times its own adapter's A then B -> (rows, seq, out)."""
        a = self.a.get(module)
        if a is None:
            return None
        a_rows = a.index_select(0, slots)  # (rows, r, in)
        b_rows = self.b[module].index_select(0, slots)  # (rows, out, r)
        return torch.bmm(torch.bmm(x, a_rows.transpose(1, 2)), b_rows.transpose(1, 2))
