"""The single-producer/single-consumer index discipline shared by every sDDF queue.

A queue is a header holding a free-running ``tail`` (written only by the producer) and
``head`` (written only by the consumer), plus ``capacity`` slots; slot = index % capacity.
Each end keeps its own index privately (it is the only writer) and validates every value
of the peer's index it reads: the peer may be buggy or malicious, so an index that moved
backwards or past the capacity raises :class:`QueueProtocolError` and changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NoReturn

from sddf import atomic


class QueueProtocolError(Exception):
    """The other side of a queue broke the protocol; the message names the queue."""

    def __init__(self, queue: str, problem: str) -> None:
        super().__init__(f"queue {queue!r}: {problem}")
        self.queue = queue
        self.problem = problem


@dataclass(frozen=True)
class Layout:
    """Where a queue kind keeps its header fields (byte offsets) and how wide its indices are."""

    tail_offset: int
    head_offset: int
    index_bits: int
    flag_offset: int | None = None  # a u32 signal flag (0 = signal requested), if the kind has one


class SignalFlag:
    """sDDF's "signalled" flag: store 0 to request a signal, 1 to cancel; 0 means one is required.

    The operations are the C calls themselves, bound to this flag (no Python frame per call)."""

    def __init__(self, ptr: atomic.Pointer, offset: int) -> None:
        self._ptr = ptr
        self._offset = offset
        self.request: Callable[[], None] = partial(atomic.store_release_u32, ptr, offset, 0)
        self.cancel: Callable[[], None] = partial(atomic.store_release_u32, ptr, offset, 1)
        # fence, then if a signal is required cancel the request and return nonzero
        self.claim: Callable[[], int] = partial(atomic.flag_claim_u32, ptr, offset)

    def required(self) -> bool:
        return atomic.load_acquire_u32(self._ptr, self._offset) == 0


def check_capacity(name: str, capacity: int, index_bits: int) -> None:
    """Capacities are powers of two so that slot = index % capacity survives index wrap."""
    if capacity <= 0 or capacity & (capacity - 1) or capacity > 1 << (index_bits - 1):
        raise ValueError(f"queue {name!r}: capacity {capacity} must be a power of two "
                         f"no larger than {1 << (index_bits - 1)}")


class RingEnd:
    """One end (producer or consumer) of an SPSC queue header in shared memory.

    The index work of each operation is one C call on an ``sddf_ring`` (see
    ``sddf/_atomic_build.py``), which holds this end's index and the peer's last accepted one."""

    def __init__(self, name: str, header: Any, layout: Layout, capacity: int,
                 producer: bool, entries: Any = None, entry_size: int = 0) -> None:
        check_capacity(name, capacity, layout.index_bits)
        self.name = name
        self.capacity = capacity
        self.is_producer = producer
        self._mask = (1 << layout.index_bits) - 1
        self._ptr = atomic.pointer(header)
        self._entries_ptr = atomic.pointer(entries) if entries is not None else atomic.NULL
        own, peer = ((layout.tail_offset, layout.head_offset) if producer
                     else (layout.head_offset, layout.tail_offset))
        self.flag = SignalFlag(self._ptr, layout.flag_offset) if layout.flag_offset is not None else None
        r = self._ring = atomic.new_ring()
        r.header, r.entries = self._ptr, self._entries_ptr
        r.own_offset, r.peer_offset, r.index_bits = own, peer, layout.index_bits
        r.capacity, r.entry_size, r.producer = capacity, entry_size, producer
        # Attaching trusts memory once (a restarted component resumes where it stopped).
        load = atomic.LOADS[layout.index_bits]
        r.own, r.peer = load(self._ptr, own), load(self._ptr, peer)
        if self._used(self._peer) > capacity:
            raise QueueProtocolError(name, f"indices tail={self._tail} head={self._head} "
                                           f"are {self._used(self._peer)} apart, capacity {capacity}")

    @property
    def _own(self) -> int:
        return self._ring.own

    @property
    def _peer(self) -> int:
        return self._ring.peer

    @property
    def _tail(self) -> int:
        return self._own if self.is_producer else self._peer

    @property
    def _head(self) -> int:
        return self._peer if self.is_producer else self._own

    def _used(self, peer: int) -> int:
        """Entries in the queue if the peer's index were ``peer``."""
        if self.is_producer:
            return (self._own - peer) & self._mask
        return (peer - self._own) & self._mask

    def _refresh(self) -> int:
        """Read and validate the peer's index; return the number of entries in the queue."""
        used = atomic.ring_refresh(self._ring)
        if used < 0:
            self._refuse_peer()
        return used

    def _refuse_peer(self) -> NoReturn:
        """The peer's index moved backwards or past the capacity (our view of it is unchanged)."""
        which = "head" if self.is_producer else "tail"
        raise QueueProtocolError(
            self.name, f"peer's {which} jumped from {self._peer} to {self._ring.refused_peer} "
                       f"(our {'tail' if self.is_producer else 'head'} is {self._own}, "
                       f"capacity {self.capacity})")

    # ---- queries ------------------------------------------------------------------------
    @property
    def index(self) -> int:
        """This end's own free-running index (tail for the producer, head for the consumer)."""
        return self._own

    def length(self) -> int:
        """Entries currently in the queue, as this end sees them."""
        return self._refresh()

    def empty(self) -> bool:
        used = atomic.ring_refresh(self._ring)  # _refresh inlined: this is the hottest query
        if used < 0:
            self._refuse_peer()
        return used == 0

    def full(self) -> bool:
        return self._refresh() == self.capacity

    def free_slots(self) -> int:
        return self.capacity - self._refresh()

    def _advance(self, count: int) -> None:
        """Publish ``count`` entries (producer) or release them (consumer) with one store."""
        atomic.ring_advance(self._ring, count)

    def _first_run(self, count: int) -> tuple[int, int]:
        """``(slot, n)``: where ``count`` entries from our index start, and how many of them come
        before the end of the ring (the other ``count - n`` continue from slot 0)."""
        first = self._own & (self.capacity - 1)
        return first, min(count, self.capacity - first)
