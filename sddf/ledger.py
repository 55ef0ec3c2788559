"""A PD's ledger: its queue moves commit all at once, and what it holds survives its death.

The monitor gives every PD a ledger, a small region mapped into that PD only and kept across its
restarts. A component ``track``\\ s the queue ends it uses: their dequeues and enqueues then move
only a private index (*staged*), and ``set`` changes its ``words`` (state its kind keeps across
restarts, e.g. which client holds each rx buffer) only in private. :meth:`Ledger.commit` — which
the loop runs after every handler and before any notify, and which a tracked end's
``signal_needed`` runs first — writes every new index and changed word to the journal, makes the
journal valid with one store, applies it (publishing the indices) and clears it.

So a PD killed at any instruction leaves either nothing of its current pass published (the
queues still hold what it was moving, and its restart does the work again) or a valid journal,
which the restarted PD applies again before its ``init``: every buffer stays in exactly one queue
or owner, and a restarted PD reads its ``words`` as they were at its last commit.

Layout (the C side, ``ledger_journal``/``ledger_apply`` in ``_ring.c``, uses the same):
u64 count of valid journal entries at 0; from 64, ``capacity`` entries of 24 bytes
{u32 region, u32 offset, u32 width, u32 reserved, u64 value}: region 0 is a word (offset: its
index), any other is the crc32 of the map name holding a queue index (offset: its byte offset,
width: its bytes); then the words, u64 each. Word 0 is the ledger's own: set by the PD's first
commit (``fresh`` is True until then).
"""
from __future__ import annotations

import struct
import zlib
from array import array
from typing import Any, Mapping

from sddf import atomic
from sddf.queue.ring import RingEnd
from sddf.shm import PAGE_SIZE

ENTRIES_OFFSET = 64
ENTRY = struct.Struct("<IIIIQ")
MAX_TRACKED_ENDS = 256
WORD_SIZE = 8


class LedgerError(Exception):
    """A ledger's journal is inconsistent, or a component tracked what a ledger cannot hold."""


def ledger_size(words: int) -> int:
    """Bytes of a ledger holding ``words`` words of component state (whole pages)."""
    need = ENTRIES_OFFSET + _capacity(words) * ENTRY.size + (words + 1) * WORD_SIZE
    return -(-need // PAGE_SIZE) * PAGE_SIZE


def _capacity(words: int) -> int:
    return MAX_TRACKED_ENDS + words + 1


def region_id(map_name: str) -> int:
    """How the journal names the region mapped as ``map_name`` (never 0, which names words)."""
    return zlib.crc32(map_name.encode()) or 1


class Ledger:
    """One PD's ledger over ``memory`` (shared, or private for a PD run without a monitor);
    ``regions`` are the PD's mapped regions, where the indices it journals live."""

    def __init__(self, pd: str, memory: Any, words: int, regions: Mapping[str, memoryview]) -> None:
        if len(memory) < ledger_size(words):
            raise LedgerError(f"PD {pd!r}: a ledger of {len(memory)} bytes cannot hold {words} words")
        self._pd = pd
        self._view = memoryview(memory).cast("B")
        self._ptr = atomic.pointer(self._view)
        self._capacity = _capacity(words)
        self._shared_words = _words(self._view, words)
        words_bytes = atomic.pointer(self._shared_words)  # for the redo's stores, by byte offset
        # the ledger's pointers keep their memory mapped as long as it lives (atomic.pointer)
        self._shared_words_ptr = atomic.typed_pointer("uint64_t", self._shared_words)
        self._regions = _by_id(pd, regions)
        self._redo(words_bytes)
        self._mirror = array("Q", self._shared_words)  # what the PD reads; set() changes it first
        self._mirror_ptr = atomic.typed_pointer("uint64_t", self._mirror)
        self._dirty = array("I", bytes(4 * (words + 1)))
        self._dirty_ptr = atomic.typed_pointer("uint32_t", self._dirty)
        self._dirty_flags = bytearray(words + 1)
        self._dirty_flags_ptr = atomic.pointer(self._dirty_flags)
        self._ndirty = 0
        #: everything the C commit needs, in one struct (one argument per call)
        self._c = atomic.new_ledger(self._ptr, self._capacity, self._shared_words_ptr, self._mirror_ptr,
                                    self._dirty_ptr, self._dirty_flags_ptr)
        #: set when a tracked ring moves (in C) or a word changes, cleared by a commit: nothing to
        #: commit while clear
        self.pending = atomic.ffi.new("uint8_t[1]")
        self._c.pending = self.pending
        self._rings: list[Any] = []
        self._ring_list = atomic.new_ring_list([])
        #: the component's words (read-only: change one with :meth:`set`)
        self.words = memoryview(self._mirror)[1:].toreadonly()
        #: True until this PD's first commit (a fresh system, not a restart): the mark is staged
        #: now, so whatever a first ``init`` publishes (buffers it hands out) is published with it
        self.fresh = self._mirror[0] == 0
        if self.fresh:
            self._set(0, 1)

    def _redo(self, words_bytes: Any) -> None:
        """Apply a journal a dead predecessor made valid but may not have finished applying."""
        count = atomic.load_acquire_u64(self._ptr, 0)
        if not count:
            return
        if count > self._capacity:
            raise LedgerError(f"PD {self._pd!r}: its ledger's journal claims {count} entries "
                              f"(it holds {self._capacity})")
        for i in range(count):
            region, offset, width, _, value = ENTRY.unpack_from(self._view, ENTRIES_OFFSET + i * ENTRY.size)
            if region == 0:
                if offset >= len(self._shared_words):
                    raise LedgerError(f"PD {self._pd!r}: its journal names word {offset} of {len(self._shared_words)}")
                atomic.store_release_u64(words_bytes, offset * WORD_SIZE, value)
                continue
            view = self._regions.get(region)
            if view is None or width * 8 not in atomic.STORES or offset + width > len(view):
                raise LedgerError(f"PD {self._pd!r}: its journal names a {width}-byte index at {offset} "
                                  f"of region id {region:#x}, which it does not map")
            atomic.STORES[width * 8](atomic.pointer(view), offset, value)
        atomic.store_release_u64(self._ptr, 0, 0)

    def count_progress(self, progress: Any) -> None:
        """Bump ``progress[0]`` (a ``uint64_t[1]``) at every commit that publishes something."""
        self._progress = progress  # the C side holds a bare pointer into it
        self._c.progress = progress

    def require(self, words: int, why: str) -> None:
        """Fail clearly unless the ledger holds ``words`` words (what the PD's wiring must give it)."""
        if len(self.words) < words:
            raise LedgerError(f"PD {self._pd!r} needs {words} ledger words ({why}) but its ProtectionDomain "
                              f"has ledger_words={len(self.words)} (Sddf.Net sets it for its virtualisers)")

    def track(self, *ends: RingEnd) -> None:
        """Stage these queue ends' index moves until :meth:`commit` (see the module docstring)."""
        for end in ends:
            r = end._ring
            r.ledger_region, r.ledger_offset = self._locate(end, r)
            r.staged, r.published, r.pending = 1, r.own, self.pending
            self._rings.append(r)
            if "signal_needed" in vars(end):  # the signalling side: publish before looking at the flag
                end.signal_needed = _committing(self, end.signal_needed)  # type: ignore[method-assign]
        if len(self._rings) > MAX_TRACKED_ENDS:
            raise LedgerError(f"PD {self._pd!r} tracks {len(self._rings)} queue ends; "
                              f"a ledger holds at most {MAX_TRACKED_ENDS}")
        self._ring_list = atomic.new_ring_list(self._rings)
        self._c.rings, self._c.nrings = self._ring_list, len(self._rings)

    def _locate(self, end: RingEnd, r: Any) -> tuple[int, int]:
        """The region id and byte offset of ``end``'s own index."""
        at = atomic.address(r.header) + r.own_offset
        for rid, view in self._regions.items():
            base = atomic.address(atomic.pointer(view))
            if base <= at < base + len(view):
                return rid, at - base
        raise LedgerError(f"PD {self._pd!r}: queue {end.name!r} is not in a region the PD maps")

    def set(self, index: int, value: int) -> None:
        """Set word ``index`` (committed with the next :meth:`commit`)."""
        self._set(index + 1, value)

    def _set(self, i: int, value: int) -> None:
        self._mirror[i] = value
        if not self._dirty_flags[i]:
            self._dirty_flags[i] = 1
            self._dirty[self._ndirty] = i
            self._ndirty += 1
            self._c.ndirty = self._ndirty
            self.pending[0] = 1

    def commit(self) -> None:
        """Publish every staged index and changed word as one journalled step."""
        if not self.pending[0]:
            return  # nothing moved or changed (most calls: cheaper than asking C)
        n = atomic.ledger_commit(self._c)  # journal, then apply (which clears the C side's dirty list)
        if n <= 0:
            if n < 0:
                raise LedgerError(f"PD {self._pd!r}: a commit does not fit its ledger's journal")
            return
        self._ndirty = 0



def _words(view: memoryview, words: int) -> memoryview:
    at = ENTRIES_OFFSET + _capacity(words) * ENTRY.size
    return view[at:at + (words + 1) * WORD_SIZE].cast("Q")


def committed_words(memory: Any, words: int) -> list[int]:
    """A ledger's component words as last committed (what an auditor outside the PD can read)."""
    return list(_words(memoryview(memory).cast("B"), words)[1:])


def _by_id(pd: str, regions: Mapping[str, memoryview]) -> dict[int, memoryview]:
    out: dict[int, memoryview] = {}
    for name in regions:
        rid = region_id(name)
        if rid in out:
            raise LedgerError(f"PD {pd!r}: map names {name!r} and another share journal id {rid:#x}; rename one")
        out[rid] = regions[name]
    return out


def _committing(ledger: Ledger, claim: Any) -> Any:
    pending, commit = ledger.pending, ledger.commit

    def signal_needed() -> int:
        if pending[0]:
            commit()
        return claim()
    return signal_needed
