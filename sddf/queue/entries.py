"""Queues of fixed-size entries (net descriptors, blk requests and responses) over a ring.

Entries are packed with ``struct`` (the index store that follows publishes them); a batch
is packed or unpacked with one struct call per contiguous segment and published with one
index store. The consumer validates every batch it reads before it takes it: a rejected
batch raises :class:`QueueProtocolError` and leaves the queue as it was.
"""
from __future__ import annotations

import struct
from itertools import chain
from typing import Any, Callable, Sequence

from sddf import atomic
from sddf.queue.ring import Layout, QueueProtocolError, RingEnd

MAX_CACHED_BATCHES = 128  # batch structs kept per entry format

# A validator looks at a batch as flat field tuples (field k of entry i at i*nfields+k)
# and returns (position in the batch, what is wrong) for the first bad entry, or None.
Validator = Callable[[tuple], "tuple[int, str] | None"]


class EntryFormat:
    """How one kind of entry is laid out after its queue's header: a little-endian struct format."""

    def __init__(self, fmt: str, header_size: int) -> None:
        self.body = fmt
        self.struct = struct.Struct("<" + fmt)
        self.size = self.struct.size
        self.fields = len(self.struct.unpack(bytes(self.size)))
        self.header_size = header_size
        self._batches: dict[int, struct.Struct] = {}

    def batch(self, count: int) -> struct.Struct:
        """The struct for ``count`` consecutive entries (cached; the cache is bounded because
        a struct for n entries costs O(n) memory and batch sizes vary)."""
        s = self._batches.get(count)
        if s is None:
            if len(self._batches) >= MAX_CACHED_BATCHES:
                self._batches.clear()
            s = self._batches[count] = struct.Struct("<" + self.body * count)
        return s

    def region_size(self, capacity: int) -> int:
        """Bytes a queue of ``capacity`` entries occupies: header then entries."""
        return self.header_size + self.size * capacity

    def entries_view(self, buffer: Any, capacity: int) -> memoryview:
        view = memoryview(buffer).cast("B")
        need = self.region_size(capacity)
        if len(view) < need:
            raise ValueError(f"a queue of {capacity} entries needs {need} bytes, buffer has {len(view)}")
        return view[self.header_size:need]


class EntryProducer(RingEnd):
    """The producing end of a queue of entries."""

    def __init__(self, name: str, buffer: Any, capacity: int, layout: Layout,
                 fmt: EntryFormat) -> None:
        super().__init__(name, memoryview(buffer).cast("B")[:fmt.header_size], layout, capacity, True)
        self._fmt = fmt
        self._entries = fmt.entries_view(buffer, capacity)

    def enqueue(self, entry: tuple) -> bool:
        """Enqueue one entry and publish it; False if the queue is full."""
        return self.enqueue_many((entry,)) == 1

    def enqueue_many(self, entries: Sequence[tuple]) -> int:
        """Enqueue as many of ``entries`` as fit, publish them with one index store; return how many."""
        return self.enqueue_flat(tuple(chain.from_iterable(entries)))

    def enqueue_flat(self, flat: tuple) -> int:
        """:meth:`enqueue_many` for entries given flat (field k of entry i at i*fields+k): the
        fastest way to move a batch, e.g. one taken with :meth:`EntryConsumer.dequeue_flat`."""
        fmt = self._fmt
        nf = fmt.fields
        count = min(len(flat) // nf, self.capacity - self._refresh())
        if count <= 0:
            return 0
        first, n = self._first_run(count)
        if n == count and n * nf == len(flat):
            fmt.batch(n).pack_into(self._entries, first * fmt.size, *flat)
        else:  # part of the batch, or split at the end of the ring
            fmt.batch(n).pack_into(self._entries, first * fmt.size, *flat[:n * nf])
            if count > n:
                fmt.batch(count - n).pack_into(self._entries, 0, *flat[n * nf:count * nf])
        self._advance(count)
        return count


class EntryConsumer(RingEnd):
    """The consuming end of a queue of entries; ``validate`` vets what the producer wrote."""

    def __init__(self, name: str, buffer: Any, capacity: int, layout: Layout,
                 fmt: EntryFormat, validate: Validator | None = None) -> None:
        super().__init__(name, memoryview(buffer).cast("B")[:fmt.header_size], layout, capacity, False)
        self._fmt = fmt
        self._entries = fmt.entries_view(buffer, capacity)
        self._validate = validate
        # A validator that can check raw entries in C (see net.BufferValidator.copy_check) gets
        # each batch copied out of shared memory into a private buffer, checked there, then unpacked.
        self._copy_check = getattr(validate, "copy_check", None)
        if self._copy_check is not None:
            self._private = bytearray(fmt.size * capacity)
            self._private_ptr = atomic.pointer(self._private)
            self._entries_ptr = atomic.pointer(self._entries)

    def dequeue(self) -> tuple | None:
        """Take one entry, or None if the queue is empty."""
        got = self.dequeue_many(1)
        return got[0] if got else None

    def dequeue_many(self, max_count: int | None = None) -> list[tuple]:
        """Take up to ``max_count`` entries (all available if None), releasing them with one store.

        Entries come back as plain tuples in field order (building named tuples would
        cost more than the dequeue itself)."""
        flat = self.dequeue_flat(max_count)
        return list(zip(*[iter(flat)] * self._fmt.fields)) if flat else []

    def dequeue_flat(self, max_count: int | None = None) -> tuple:
        """:meth:`dequeue_many` with the entries flat (field k of entry i at i*fields+k)."""
        count = self._refresh()
        if max_count is not None and max_count < count:
            count = max_count
        if count <= 0:
            return ()
        fmt = self._fmt
        first, n = self._first_run(count)
        bad = -1
        if self._copy_check is not None:
            bad = self._copy_check(self._private_ptr, self._entries_ptr, first, count, self.capacity)
            flat = fmt.batch(count).unpack_from(self._private, 0)
        else:
            flat = fmt.batch(n).unpack_from(self._entries, first * fmt.size)
            if count > n:  # split at the end of the ring
                flat += fmt.batch(count - n).unpack_from(self._entries, 0)
        if self._validate is not None and (bad >= 0 or self._copy_check is None):  # the message
            problem = self._validate(flat)
            if problem is not None:
                index = (self._own + problem[0]) & self._mask
                raise QueueProtocolError(self.name, f"entry at index {index}: {problem[1]}")
        self._advance(count)
        return flat


def first_bad(flat: tuple, nfields: int, bad: Callable[..., bool]) -> int | None:
    """Position of the first entry in ``flat`` for which ``bad(*fields)`` holds, if any (slow path)."""
    for i in range(len(flat) // nfields):
        if bad(*flat[i * nfields:(i + 1) * nfields]):
            return i
    return None
