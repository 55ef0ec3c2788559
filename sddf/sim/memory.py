"""Shared memory as x86-TSO: a FIFO store buffer per PD in front of the real regions.

A PD's stores wait in its own store buffer; its own loads see them first, other PDs (and the
audits) only once they drain — at a seeded moment, or at the PD's next seq_cst fence or atomic
read-modify-write, which drain all of them (x86's ``mfence`` and locked instructions). Stores
drain in the order they were made, so a store is never seen before an earlier one of the same PD.
With ``tso=False`` stores go straight to memory (sequential consistency).

Addresses are the PD's own: every PD maps each region once, so a load is matched to the PD's
buffered stores by address. Private memory (a queue end's staging copy, a ledger's mirror) is
never buffered: the models in :mod:`sddf.sim.models` touch it directly. Only the models' loads see
a PD's own buffered stores; plain memoryview reads see memory, so code that reads back that way
what it stored through the models runs :meth:`Memory.unbuffered` (a component's constructor: its
ledger re-applies a dead predecessor's journal, then reads the words back).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from sddf import atomic

ffi = atomic.ffi


@dataclass
class Store:
    """One buffered store: ``data`` for the bytes at ``ptr + off`` (``address`` in its PD's mapping)."""

    ptr: Any
    off: int
    data: bytes
    address: int


class Memory:
    """The store buffers, and which PD's code runs now (the last of :attr:`stack`)."""

    def __init__(self, tso: bool) -> None:
        self.tso = tso
        self.buffers: dict[str, list[Store]] = {}
        #: the PDs whose code is on the Python stack (a PPC's callee or a preempting PD above its caller)
        self.stack: list[str] = []
        self._buffering = tso

    @contextmanager
    def running(self, pd: str) -> Iterator[None]:
        """Attribute the loads and stores made inside to ``pd``."""
        self.stack.append(pd)
        try:
            yield
        finally:
            self.stack.pop()

    @contextmanager
    def unbuffered(self) -> Iterator[None]:
        """Stores made inside go straight to memory: for code that reads back with plain memoryview
        reads what it stored through the models (which only the models' loads forward)."""
        self._buffering = False
        try:
            yield
        finally:
            self._buffering = self.tso

    @property
    def current(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def _own(self) -> list[Store] | None:
        """The running PD's store buffer (None: no PD runs, or stores are not buffered)."""
        if not self._buffering or not self.stack:
            return None
        return self.buffers.setdefault(self.stack[-1], [])

    # ---- accesses ---------------------------------------------------------------------------
    def read(self, ptr: Any, off: int, size: int) -> bytes:
        """``size`` bytes at ``ptr + off`` as the running PD sees them (its own stores first)."""
        data = ffi.buffer(ptr + off, size)[:]
        own = self.buffers.get(self.stack[-1]) if self.stack else None
        if not own:
            return data
        lo = atomic.address(ptr) + off
        hi = lo + size
        merged: bytearray | None = None
        for s in own:
            end = s.address + len(s.data)
            if s.address < hi and end > lo:
                merged = merged if merged is not None else bytearray(data)
                a, b = max(lo, s.address), min(hi, end)
                merged[a - lo:b - lo] = s.data[a - s.address:b - s.address]
        return data if merged is None else bytes(merged)

    def write(self, ptr: Any, off: int, data: bytes) -> None:
        """Store ``data`` at ``ptr + off``: buffered for the running PD, or at once."""
        own = self._own()
        if own is None:
            ffi.memmove(ptr + off, data, len(data))
        else:
            own.append(Store(ptr, off, data, atomic.address(ptr) + off))

    def fence(self) -> None:
        """A seq_cst fence (or locked instruction) of the running PD: its stores all drain."""
        if self.stack:
            self.drain(self.stack[-1])

    # ---- draining ---------------------------------------------------------------------------
    def pending(self, pd: str) -> int:
        return len(self.buffers.get(pd, ()))

    def drain(self, pd: str, count: int | None = None) -> int:
        """Make ``pd``'s oldest ``count`` buffered stores (all if None) visible; return how many."""
        own = self.buffers.get(pd)
        if not own:
            return 0
        count = len(own) if count is None else min(count, len(own))
        for s in own[:count]:
            ffi.memmove(s.ptr + s.off, s.data, len(s.data))
        del own[:count]
        return count

    def drain_all(self) -> int:
        return sum(self.drain(pd) for pd in list(self.buffers))

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Memory as each PD's program order has it (every buffered store applied), for the
        duration of the block; then exactly as it was."""
        saved: list[tuple[Store, bytes]] = []
        for own in self.buffers.values():
            for s in own:
                saved.append((s, ffi.buffer(s.ptr + s.off, len(s.data))[:]))
                ffi.memmove(s.ptr + s.off, s.data, len(s.data))
        try:
            yield
        finally:
            for s, old in reversed(saved):
                ffi.memmove(s.ptr + s.off, old, len(old))
