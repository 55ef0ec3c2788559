"""The single-producer/single-consumer index discipline and signalling protocol of every sDDF queue.

A queue is a header holding a free-running ``tail`` (written only by the producer) and
``head`` (written only by the consumer), plus ``capacity`` slots; slot = index % capacity.
Each end keeps its own index privately (it is the only writer) and validates every value
of the peer's index it reads: the peer may be buggy or malicious, so an index that moved
backwards or past the capacity raises :class:`QueueProtocolError` and changes nothing.

An end of a queue kind with a signal flag carries sDDF's protocol (as ``queue.h`` does): the
side that waits calls :meth:`RingEnd.request_and_recheck` before it sleeps (request a signal,
seq_cst fence, re-check: if work appeared it cancels and goes on); the other side, after
publishing, calls :meth:`RingEnd.signal_needed` (seq_cst fence, then claim a requested signal)
and notifies only if it returns True. Net queues keep the flag for the consumer
(``consumer_signalled``), serial queues for the producer (``producer_signalled``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from sddf import atomic


#: what an end facing an untrusted peer calls instead of raising: (counter name, what was wrong)
OnRefuse = Callable[[str, str], None]


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
    flag_waiter_is_producer: bool = False  # which end requests signals on that flag


def check_capacity(name: str, capacity: int, index_bits: int) -> None:
    """Entry i lives at slot i % capacity. With 16-bit indices (net) the capacity must be a power
    of two: otherwise, once the index wraps (every 65536 entries), two entries in flight can share
    a slot. 32-bit indices (block, serial) take any capacity, as sDDF's do (sdfgen sizes a
    virtualiser's queue as the sum of its clients', e.g. 384); they wrap after 2^32 entries."""
    largest = 1 << (index_bits - 1)
    power_of_two = not capacity & (capacity - 1)
    if capacity <= 0 or capacity > largest or (index_bits == 16 and not power_of_two):
        need = "a power of two" if index_bits == 16 else "at least 1"
        raise ValueError(f"queue {name!r}: capacity {capacity} must be {need} and no larger than {largest}")


def runs(index: int, count: int, capacity: int, index_bits: int) -> list[tuple[int, int]]:
    """``(slot, n)`` runs of contiguous slots holding ``count`` entries from ``index`` on (entry i
    at slot i % capacity): a run ends at the end of the ring or where the index wraps."""
    out, done, wrap = [], 0, 1 << index_bits
    while done < count:
        at = (index + done) % wrap
        slot = at % capacity
        n = min(count - done, capacity - slot, wrap - at)
        out.append((slot, n))
        done += n
    return out


class RingEnd:
    """One end (producer or consumer) of an SPSC queue header in shared memory.

    The index work of each operation is one C call on an ``sddf_ring`` (see
    ``sddf/_ring.c``), which holds this end's index and the peer's last accepted one."""

    def __init__(self, name: str, header: Any, layout: Layout, capacity: int,
                 producer: bool, entries: Any = None, entry_size: int = 0,
                 on_refuse: OnRefuse | None = None) -> None:
        check_capacity(name, capacity, layout.index_bits)
        self.name = name
        #: a component's ``refuse``: a peer's protocol violation is then reported and recovered
        #: from (see :meth:`_refuse_peer`) instead of raised
        self.on_refuse = on_refuse
        self.capacity = capacity
        self.is_producer = producer
        self._mask = (1 << layout.index_bits) - 1
        self._ptr = atomic.pointer(header)
        self._entries_ptr = atomic.pointer(entries) if entries is not None else atomic.NULL
        own, peer = ((layout.tail_offset, layout.head_offset) if producer
                     else (layout.head_offset, layout.tail_offset))
        r = self._ring = atomic.new_ring()
        r.header, r.entries = self._ptr, self._entries_ptr
        r.own_offset, r.peer_offset, r.index_bits = own, peer, layout.index_bits
        r.capacity, r.entry_size, r.producer = capacity, entry_size, producer
        if layout.flag_offset is not None:
            self._bind_protocol(layout, producer)
        # Attaching trusts memory once (a restarted component resumes where it stopped) unless
        # the indices contradict each other (a header left corrupt): then the queue starts empty.
        self._load = partial(atomic.LOADS[layout.index_bits], self._ptr)
        r.own, r.peer = self._load(own), self._load(peer)
        if self._used(self._peer) > capacity:
            error = QueueProtocolError(name, f"indices tail={self._tail} head={self._head} "
                                             f"are {self._used(self._peer)} apart, capacity {capacity}")
            self._recover(error)

    def _bind_protocol(self, layout: Layout, producer: bool) -> None:
        """Bind the signalling protocol's C calls for this end's side of the flag."""
        r = self._ring
        r.flag_offset = layout.flag_offset
        ptr, offset = self._ptr, layout.flag_offset
        self.signal_requested = lambda: atomic.load_acquire_u32(ptr, offset) == 0  # type: ignore[method-assign]
        if producer == layout.flag_waiter_is_producer:  # this end waits: it requests signals
            self.request_signal: Callable[[], None] = partial(atomic.store_release_u32, ptr, offset, 0)
            self.cancel_signal: Callable[[], None] = partial(atomic.store_release_u32, ptr, offset, 1)
            self._request_recheck = partial(atomic.ring_request_recheck, r)
        else:  # this end signals the waiting one
            self.signal_needed: Callable[[], int] = partial(atomic.ring_claim_signal, r)

    # ---- signalling protocol (bound per end in _bind_protocol) -------------------------------
    def request_signal(self) -> None:
        """Ask the other end to notify us when it next makes progress (store 0 in the flag)."""
        raise TypeError(f"queue {self.name!r}: this end does not wait for signals")

    def cancel_signal(self) -> None:
        """Withdraw a request for a signal (store 1)."""
        raise TypeError(f"queue {self.name!r}: this end does not wait for signals")

    def signal_needed(self) -> int:
        """After publishing: seq_cst fence, then if the other end asked for a signal, cancel
        its request and return nonzero (the caller notifies it)."""
        raise TypeError(f"queue {self.name!r}: this end does not send signals")

    def signal_requested(self) -> bool:
        """Whether the waiting end's request for a signal is standing (the flag is 0)."""
        raise TypeError(f"queue {self.name!r}: this kind of queue has no signal flag")

    def request_and_recheck(self) -> bool:
        """Before sleeping: request a signal, fence, re-check. True → work appeared (entries for
        a consumer, room for a producer): the request is cancelled, go on instead of sleeping."""
        ready = self._request_recheck()
        if ready < 0:
            self._refuse_peer()  # nothing to wait for on a queue whose peer broke it
        return ready > 0

    def _request_recheck(self) -> int:
        raise TypeError(f"queue {self.name!r}: this end does not wait for signals")

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
            return self.capacity if self.is_producer else 0  # no room, nothing to take
        return used

    def _refuse_peer(self) -> None:
        """The peer's index moved backwards or past the capacity: see :meth:`_recover` (the
        caller then carries on as if the queue had nothing to offer this time)."""
        which = "head" if self.is_producer else "tail"
        self._recover(QueueProtocolError(
            self.name, f"peer's {which} jumped from {self._peer} to {self._ring.refused_peer} "
                       f"(our {'tail' if self.is_producer else 'head'} is {self._own}, "
                       f"capacity {self.capacity})"))

    def _recover(self, error: QueueProtocolError) -> None:
        """Raise ``error``; or, with ``on_refuse`` set, report it and start the queue afresh: take
        the peer's index as it stands and move ours to it, so the queue is empty and consistent
        again (whatever it held is dropped: a corrupt header is reset, never trusted and never
        fatal for good). Both ends may do it; the peer then sees our index agree with its own."""
        if self.on_refuse is None:
            raise error
        self.on_refuse(f"{self.name}.protocol_errors", str(error))
        r = self._ring
        r.peer = self._load(r.peer_offset)
        r.own = r.peer
        atomic.STORES[r.index_bits](self._ptr, r.own_offset, r.own)
        r.published = r.own  # a reset is published at once, staged or not

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
            return True
        return used == 0

    def full(self) -> bool:
        return self._refresh() == self.capacity

    def free_slots(self) -> int:
        return self.capacity - self._refresh()

    def _advance(self, count: int) -> None:
        """Publish ``count`` entries (producer) or release them (consumer) with one store."""
        atomic.ring_advance(self._ring, count)

    def _runs(self, count: int) -> list[tuple[int, int]]:
        """Where ``count`` entries from our index lie: ``(slot, n)`` runs (see :func:`runs`)."""
        return runs(self._own, count, self.capacity, self._ring.index_bits)



def drain(consumer: Any, handle: Callable[[list[tuple]], None], batch: int = 64) -> int:
    """Consume a queue until it stays empty under the signalling protocol; return entries handled.

    ``handle`` gets batches of at most ``batch`` entries (it may notify after each: a capped
    pass). On return the consumer has requested a signal, so the producer's next publish
    notifies it.
    """
    total = 0
    while True:
        entries = consumer.dequeue_many(batch)
        if entries:
            handle(entries)
            total += len(entries)
            if consumer.last_taken == batch:
                continue  # maybe more: take it before asking to be signalled
        if not consumer.request_and_recheck():
            return total
