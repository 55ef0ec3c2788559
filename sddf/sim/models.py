"""Python twins of every C call of :mod:`sddf.atomic` (``sddf/_ring.c``), over the simulator's memory.

Each model does what its C function does, statement for statement (index validation, net
descriptor checks and oid masking, staged rings, the ledger's journal and apply), but its
shared-memory stores go through the running PD's store buffer (:class:`sddf.sim.memory.Memory`)
and its seq_cst fences and read-modify-writes drain that buffer. Private memory (a queue end's
staging copy, a ledger's mirror, dirty list and flags) is read and written directly, as in C.

Every call first gives the :class:`Observer` a scheduling point (where the simulator may run
another PD's handler or drain a store buffer), and reports what it moved through a queue (for
the FIFO check), what it refused, and each signal flag it stored.
:func:`install` puts the models in place of the C calls; components built afterwards bind them.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Callable, Protocol

from sddf import atomic
from sddf.ledger import ENTRIES_OFFSET, ENTRY
from sddf.sim.memory import Memory
from sddf.queue.ring import runs

ffi = atomic.ffi
MASKS = {16: 0xFFFF, 32: 0xFFFFFFFF}
NET_DESC = 16  # bytes of a net descriptor: u64 io_or_offset, u16 len, u8 oid at byte 10
U64 = struct.Struct("<Q")


class Observer(Protocol):
    """What the simulator hears from the models."""

    def point(self) -> None:
        """A shared-memory access is about to happen (a scheduling point)."""

    def put(self, ring: Any, index: int, data: bytes) -> None:
        """A producer wrote entries ``data`` from free-running index ``index``."""

    def took(self, ring: Any, index: int, data: bytes) -> None:
        """A consumer read entries ``data`` from index ``index`` (as in the ring, before checks)."""

    def refused(self, ring: Any, what: str) -> None:
        """An end refused what its peer wrote."""

    def flag(self, ptr: Any, off: int, value: int) -> None:
        """A u32 was stored at ``ptr + off`` (a signal flag is one)."""


class Models:
    """The models of one simulation's memory; :func:`install` binds them into :mod:`sddf.atomic`."""

    def __init__(self, memory: Memory, observer: Observer) -> None:
        self.mem = memory
        self.obs = observer

    # ---- plain accesses -----------------------------------------------------------------------
    def load(self, size: int) -> Callable[[Any, int], int]:
        def load_acquire(base: Any, off: int) -> int:
            self.obs.point()
            return int.from_bytes(self.mem.read(base, off, size), "little")
        return load_acquire

    def store(self, size: int) -> Callable[[Any, int, int], None]:
        def store_release(base: Any, off: int, value: int) -> None:
            self.obs.point()
            self.mem.write(base, off, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
            if size == 4:
                self.obs.flag(base, off, value)
        return store_release

    def fence_seq_cst(self) -> None:
        self.obs.point()
        self.mem.fence()

    def _rmw(self, base: Any, off: int, change: Callable[[int], int]) -> int:
        """A locked u64 read-modify-write: drains the running PD's stores, then acts on memory."""
        self.obs.point()
        self.mem.fence()
        old = U64.unpack(self.mem.read(base, off, 8))[0]
        self.mem.write(base, off, U64.pack(change(old)))
        self.mem.fence()
        return old

    def exchange_u64(self, base: Any, off: int, value: int) -> int:
        return self._rmw(base, off, lambda _old: value)

    def fetch_or_u64(self, base: Any, off: int, bits: int) -> int:
        return self._rmw(base, off, lambda old: old | bits)

    def notify_word(self, base: Any, off: int, eventfd: int) -> int:
        if self.exchange_u64(base, off, 1) != 0:
            return 0
        try:
            os.write(eventfd, (1).to_bytes(8, "little"))
        except OSError as exc:
            return -exc.errno
        return 1

    # ---- one end of a queue -------------------------------------------------------------------
    def _load_index(self, r: Any, off: int) -> int:
        return int.from_bytes(self.mem.read(r.header, off, r.index_bits // 8), "little")

    def _store_own(self, r: Any) -> None:
        self.mem.write(r.header, r.own_offset, r.own.to_bytes(r.index_bits // 8, "little"))

    def _store_flag(self, r: Any, value: int) -> None:
        self.mem.write(r.header, r.flag_offset, value.to_bytes(4, "little"))
        self.obs.flag(r.header, r.flag_offset, value)

    @staticmethod
    def _used(r: Any, peer: int) -> int:
        return ((r.own - peer) if r.producer else (peer - r.own)) & MASKS[r.index_bits]

    def _refresh(self, r: Any) -> int:
        peer = self._load_index(r, r.peer_offset)
        if peer != r.peer:
            moved, before = (peer - r.peer) & MASKS[r.index_bits], self._used(r, r.peer)
            if moved > before if r.producer else before + moved > r.capacity:
                r.refused_peer = peer
                self.obs.refused(r, f"peer index moved from {r.peer} to {peer}")
                return -1
            r.peer = peer
        return self._used(r, peer)

    def ring_refresh(self, r: Any) -> int:
        self.obs.point()
        return self._refresh(r)

    def _advance(self, r: Any, count: int) -> None:
        r.own = (r.own + count) & MASKS[r.index_bits]
        if not r.staged:
            self._store_own(r)
        elif r.pending:
            r.pending[0] = 1

    def ring_advance(self, r: Any, count: int) -> None:
        self.obs.point()
        self._advance(r, count)

    def _segments(self, r: Any, count: int) -> list[tuple[int, int]]:
        """(byte offset in the entries, bytes) of ``count`` entries from our index, as ring_copy runs."""
        size = r.entry_size
        return [(size * slot, size * n) for slot, n in runs(r.own, count, r.capacity, r.index_bits)]

    def ring_take(self, r: Any, dst: Any, max_count: int, commit: int) -> int:
        self.obs.point()
        used = self._refresh(r)
        if used < 0:
            return -1
        count = min(used, max_count)
        r.taken = count
        r.refused = 0
        if count == 0:
            return 0
        data = b"".join(self.mem.read(r.entries, at, n) for at, n in self._segments(r, count) if n)
        self.obs.took(r, r.own, data)
        ffi.memmove(dst, data, len(data))
        good = self._net_check(r, dst, count) if r.check_net else count
        if commit:
            self._advance(r, count)
        return good

    def _net_check(self, r: Any, dst: Any, count: int) -> int:
        """Check the descriptors copied to ``dst``, masking each oid; move the good ones together."""
        d = bytearray(ffi.buffer(dst, NET_DESC * count))
        good = 0
        r.refused = 0
        for i in range(count):
            at = NET_DESC * i
            io, length = struct.unpack_from("<QH", d, at)
            d[at + 10] &= 0x3F
            if not self._desc_ok(r, io, length):
                if r.refused == 0:
                    r.bad_io, r.bad_len, r.bad_oid, r.bad_position = io, length, d[at + 10], i
                r.refused += 1
                continue
            if good != i:
                d[NET_DESC * good:NET_DESC * (good + 1)] = d[at:at + NET_DESC]
            good += 1
        ffi.memmove(dst, bytes(d), len(d))
        if r.refused:
            self.obs.refused(r, f"{r.refused} descriptor(s), the first io_or_offset={r.bad_io:#x} len={r.bad_len}")
        return good

    @staticmethod
    def _desc_ok(r: Any, io: int, length: int) -> bool:
        if length > r.max_len:
            return False
        for k in range(r.span_count):
            span = r.spans[k]
            if span.lo <= io <= span.hi and (io - span.lo) % r.align == 0:
                return True
        return False

    def ring_put(self, r: Any, src: Any, count: int) -> int:
        self.obs.point()
        used = self._refresh(r)
        if used < 0:
            return -1
        count = min(count, r.capacity - used)
        data = ffi.buffer(src, r.entry_size * count)[:]
        if r.check_net:
            for i in range(count):
                if data[NET_DESC * i + 10] > 0x3F:
                    r.bad_position = i
                    return -2
        if count:
            at = 0
            for offset, n in self._segments(r, count):
                if n:
                    self.mem.write(r.entries, offset, data[at:at + n])
                    at += n
            self.obs.put(r, r.own, data)
            self._advance(r, count)
        return count

    def ring_request_recheck(self, r: Any) -> int:
        self.obs.point()
        self._store_flag(r, 0)
        self.mem.fence()
        used = self._refresh(r)
        if used < 0:
            return -1
        if (used == r.capacity) if r.producer else used == 0:
            return 0
        self._store_flag(r, 1)
        return 1

    def ring_claim_signal(self, r: Any) -> int:
        self.obs.point()
        self.mem.fence()
        if int.from_bytes(self.mem.read(r.header, r.flag_offset, 4), "little") != 0:
            return 0
        self._store_flag(r, 1)
        return 1

    # ---- a PD's ledger ------------------------------------------------------------------------
    def ledger_journal(self, led: Any) -> int:
        self.obs.point()
        n = 0
        for i in range(led.nrings):
            r = led.rings[i]
            if r.own == r.published:
                continue
            if n == led.capacity:
                return -1
            self.mem.write(led.ledger, ENTRIES_OFFSET + ENTRY.size * n,
                           ENTRY.pack(r.ledger_region, r.ledger_offset, r.index_bits // 8, 0, r.own))
            n += 1
        for i in range(led.ndirty):
            if n == led.capacity:
                return -1
            word = led.dirty[i]
            self.mem.write(led.ledger, ENTRIES_OFFSET + ENTRY.size * n, ENTRY.pack(0, word, 8, 0, led.words[word]))
            n += 1
        if n:
            self.mem.write(led.ledger, 0, U64.pack(n))
        return n

    def ledger_apply(self, led: Any) -> None:
        self.obs.point()
        for i in range(led.nrings):
            r = led.rings[i]
            if r.own != r.published:
                self._store_own(r)
                r.published = r.own
        shared = ffi.cast("uint8_t *", led.shared_words)
        for i in range(led.ndirty):
            word = led.dirty[i]
            self.mem.write(shared, 8 * word, U64.pack(led.words[word]))
            led.dirty_flags[word] = 0
        led.ndirty = 0
        led.pending[0] = 0
        if led.progress:
            led.progress[0] += 1
        self.mem.write(led.ledger, 0, U64.pack(0))


    def ledger_commit(self, led: Any) -> int:
        n = self.ledger_journal(led)
        if n > 0:
            self.ledger_apply(led)
        return n


#: the sddf.atomic names the models replace (each is also a C function of _ring.c)
CALLS = ("fence", "exchange_u64", "fetch_or_u64", "notify_word", "ring_refresh", "ring_advance", "ring_take",
         "ring_put", "ring_request_recheck", "ring_claim_signal", "ledger_journal", "ledger_apply", "ledger_commit")
SIZES = {8: 1, 16: 2, 32: 4, 64: 8}


def install(models: Models) -> Callable[[], None]:
    """Put ``models`` in place of sddf.atomic's C calls (queue ends and ledgers made from now on
    bind them); return what puts the C calls back."""
    saved = {name: getattr(atomic, name) for name in CALLS}
    saved.update({f"{kind}_u{bits}": getattr(atomic, f"{kind}_u{bits}")
                  for kind in ("load_acquire", "store_release") for bits in SIZES})
    loads, stores = dict(atomic.LOADS), dict(atomic.STORES)
    for name in CALLS:
        setattr(atomic, name, getattr(models, "fence_seq_cst" if name == "fence" else name))
    for bits, size in SIZES.items():
        setattr(atomic, f"load_acquire_u{bits}", models.load(size))
        setattr(atomic, f"store_release_u{bits}", models.store(size))
    atomic.LOADS.update({bits: getattr(atomic, f"load_acquire_u{bits}") for bits in atomic.LOADS})
    atomic.STORES.update({bits: getattr(atomic, f"store_release_u{bits}") for bits in atomic.STORES})

    def restore() -> None:
        for name, original in saved.items():
            setattr(atomic, name, original)
        atomic.LOADS.update(loads)
        atomic.STORES.update(stores)
    return restore
