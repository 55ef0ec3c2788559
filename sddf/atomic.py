"""Memory-ordered access to shared buffers: load-acquire, store-release, seq_cst fence, u64 RMW.

Every function takes a *pointer* made once by :func:`pointer` from a buffer (an mmap or a
memoryview of one) and a byte offset. Shared indices and flags must go through these, never
through ``struct.pack_into`` (which zero-fills before writing, so a peer can read a torn 0).
"""
from __future__ import annotations

from typing import Any

from sddf._atomic import ffi, lib

Pointer = Any  # a cffi ``uint8_t *`` into a live buffer

load_acquire_u8 = lib.load_acquire_u8
load_acquire_u16 = lib.load_acquire_u16
load_acquire_u32 = lib.load_acquire_u32
load_acquire_u64 = lib.load_acquire_u64
store_release_u8 = lib.store_release_u8
store_release_u16 = lib.store_release_u16
store_release_u32 = lib.store_release_u32
store_release_u64 = lib.store_release_u64
fence = lib.fence_seq_cst
exchange_u64 = lib.exchange_u64
fetch_or_u64 = lib.fetch_or_u64
notify_word = lib.notify_word  # set a pending word, write the eventfd if it was clear (sddf.channel)
# one end of a queue: its index step per batch in C (sddf/queue/ring.py, entries.py)
ring_refresh = lib.ring_refresh
ring_advance = lib.ring_advance
ring_take = lib.ring_take
ring_put = lib.ring_put
ring_request_recheck = lib.ring_request_recheck  # request a signal, fence, re-check (the waiting end)
ring_claim_signal = lib.ring_claim_signal  # fence, then take a requested signal (the signalling end)
# a PD's ledger: journal a commit, then apply it (sddf/ledger.py)
ledger_journal = lib.ledger_journal
ledger_apply = lib.ledger_apply
ledger_commit = lib.ledger_commit  # both in one call (sddf.faults and the simulator split it again)
NULL = ffi.NULL

LOADS = {16: load_acquire_u16, 32: load_acquire_u32, 64: load_acquire_u64}
STORES = {16: store_release_u16, 32: store_release_u32, 64: store_release_u64}


def new_ring() -> Any:
    """A zeroed ``sddf_ring`` (the C state of one queue end), freed with its last reference."""
    return ffi.new("sddf_ring *")


def new_spans(spans: list[tuple[int, int]]) -> Any:
    """An ``sddf_span`` array of (lowest, highest) buffer addresses for a ring's net check."""
    return ffi.new("sddf_span[]", [{"lo": lo, "hi": hi} for lo, hi in spans])


def new_ledger(ledger: Pointer, capacity: int, shared_words: Any, words: Any, dirty: Any, dirty_flags: Any) -> Any:
    """An ``sddf_ledger`` (what a commit needs) over these pointers, which its owner keeps alive;
    its rings are set once tracked."""
    c = ffi.new("sddf_ledger *")
    c.ledger, c.capacity, c.shared_words, c.words, c.dirty, c.dirty_flags = (
        ledger, capacity, shared_words, words, dirty, dirty_flags)
    return c


def new_ring_list(rings: list[Any]) -> Any:
    """An ``sddf_ring *`` array of ``rings`` (each kept alive by its owner)."""
    return ffi.new("sddf_ring *[]", rings)


def address(ptr: Pointer) -> int:
    """Where a pointer points, as a number."""
    return int(ffi.cast("uintptr_t", ptr))


def typed_pointer(ctype: str, buffer: Any) -> Any:
    """A ``ctype *`` into ``buffer``, keeping its memory alive (see :func:`pointer`)."""
    base = pointer(buffer)
    return _anchored(ffi.cast(ctype + " *", base), base)


def pointer(buffer: Any) -> Pointer:
    """A ``uint8_t *`` into ``buffer`` that keeps its memory alive; read-only buffers allowed.

    For a memoryview the export is taken on the object underneath (an mmap, a bytearray), never
    on the view: CPython 3.11's cycle collector can crash freeing a memoryview that is still
    exported (its tp_clear drops the view's buffer anyway), and views live in components' cycles."""
    if not isinstance(buffer, memoryview) or buffer.obj is None:
        return ffi.from_buffer("uint8_t[]", buffer)
    base = ffi.from_buffer("uint8_t[]", buffer.obj)
    probe = ffi.from_buffer("uint8_t[]", buffer)  # only to learn where the view starts
    offset = address(probe) - address(base)
    del probe
    return _anchored(ffi.cast("uint8_t *", base) + offset, base)


def _anchored(ptr: Any, owner: Any) -> Any:
    """``ptr``, as a cdata that keeps ``owner`` (the export of the memory it points into) alive."""
    return ffi.gc(ptr, lambda _ptr, _owner=owner: None)
