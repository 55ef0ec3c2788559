"""Queues of fixed-size entries (net descriptors, blk requests and responses) over a ring.

Entries are packed with ``struct`` (the index store that follows publishes them); a batch
is packed or unpacked with one struct call per contiguous segment and published with one
index store. The consumer checks every batch it reads on a private copy before handing it out.
"""
from __future__ import annotations

import struct
from functools import partial
from itertools import chain
from typing import Any, Callable, Sequence

from sddf import atomic
from sddf.queue.ring import Layout, OnRefuse, QueueProtocolError, RingEnd, check_capacity

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


class _EntryEnd(RingEnd):
    """A ring end whose entries are copied between the ring and a private staging buffer in C."""

    def __init__(self, name: str, buffer: Any, capacity: int, layout: Layout, fmt: EntryFormat,
                 producer: bool, on_refuse: OnRefuse | None = None) -> None:
        check_capacity(name, capacity, layout.index_bits)  # before sizing the entries by it
        view = memoryview(buffer).cast("B")
        super().__init__(name, view[:fmt.header_size], layout, capacity, producer,
                         fmt.entries_view(buffer, capacity), fmt.size, on_refuse)
        self._fmt = fmt
        self._fields = fmt.fields
        self._staging = bytearray(fmt.size * capacity)  # private: the peer cannot change it under us
        self._staging_ptr = atomic.pointer(self._staging)
        # the struct call bound to the staging buffer, per batch size (packers: per flat length),
        # looked up with one dict get
        self._packers: dict[int, Callable[..., None]] = {}
        self._unpackers: dict[int, Callable[[], tuple]] = {}

    def _new_packer(self, count: int) -> Callable[..., None]:
        """The packer of ``count`` entries, cached under its flat length (``count`` × fields)."""
        return _cache(self._packers, count * self._fields, partial(self._fmt.batch(count).pack_into, self._staging, 0))

    def _new_unpacker(self, count: int) -> Callable[[], tuple]:
        return _cache(self._unpackers, count, partial(self._fmt.batch(count).unpack_from, self._staging))


def _cache(cache: dict[int, Any], key: int, value: Any) -> Any:
    """Remember ``value`` under ``key`` in a bounded cache (batch sizes vary); return it."""
    if len(cache) >= MAX_CACHED_BATCHES:
        cache.clear()
    cache[key] = value
    return value


class EntryProducer(_EntryEnd):
    """The producing end of a queue of entries."""

    def __init__(self, name: str, buffer: Any, capacity: int, layout: Layout,
                 fmt: EntryFormat, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, layout, fmt, True, on_refuse)
        self._put = partial(atomic.ring_put, self._ring, self._staging_ptr)

    def enqueue(self, entry: tuple) -> bool:
        """Enqueue one entry and publish it; False if the queue is full."""
        return self.enqueue_many((entry,)) == 1

    def enqueue_many(self, entries: Sequence[tuple]) -> int:
        """Enqueue as many of ``entries`` as fit, publish them with one index store; return how many."""
        return self.enqueue_flat(tuple(chain.from_iterable(entries)))

    def enqueue_flat(self, flat: tuple) -> int:
        """:meth:`enqueue_many` for entries given flat (field k of entry i at i*fields+k): the
        fastest way to move a batch, e.g. one taken with :meth:`EntryConsumer.dequeue_flat`."""
        packer = self._packers.get(len(flat))  # keyed by the flat length: whole entries only
        if packer is None:
            count = min(len(flat) // self._fields, self.capacity)
            if count <= 0:
                return 0
            flat = flat[:count * self._fields]
            packer = self._packers.get(len(flat)) or self._new_packer(count)
        packer(*flat)
        put = self._put(len(flat) // self._fields)
        if put < 0:
            return self._put_failed(put, flat)
        return put

    def _put_failed(self, put: int, flat: tuple) -> int:
        if put == -1:
            self._refuse_peer()
            return 0
        nf, at = self._fields, self._ring.bad_position
        raise ValueError(f"queue {self.name!r}: cannot enqueue {flat[at * nf:(at + 1) * nf]}: a field does not "
                         "fit its width in the C layout")


class EntryConsumer(_EntryEnd):
    """The consuming end of a queue of entries; ``validate`` vets what the producer wrote.

    A batch is copied out of shared memory and checked on the copy (the producer may still
    write the ring). A Python ``validate`` sees the unpacked batch before it is released and
    refuses the whole batch (:class:`QueueProtocolError`, nothing released). A subclass may
    instead check entries in the C call (net descriptors): bad ones are consumed, not handed
    out, counted in :attr:`refused` and reported to :meth:`_report_refused`."""

    def __init__(self, name: str, buffer: Any, capacity: int, layout: Layout,
                 fmt: EntryFormat, validate: Validator | None = None, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, layout, fmt, False, on_refuse)
        self._validate = validate
        self._commit = validate is None  # released in the C call
        self._take = partial(atomic.ring_take, self._ring, self._staging_ptr)
        #: entries refused so far (consumed, never handed out)
        self.refused = 0
        self.peek_released = False
        self._peeked = 0  # entries the last peek_many handed out

    @property
    def last_taken(self) -> int:
        """How many entries the last dequeue consumed, refused ones included."""
        return self._ring.taken

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
        if max_count is None:
            max_count = self.capacity
        elif max_count <= 0:
            return ()
        count = self._take(max_count, self._commit)
        if count > 0 and self._commit and not self._ring.refused:  # the common case
            return (self._unpackers.get(count) or self._new_unpacker(count))()
        if count <= 0:
            if count < 0:
                self._refuse_peer()
                return ()
            if not self._ring.refused:
                return ()
        if self._ring.refused:
            self._report_refused()
        flat = (self._unpackers.get(count) or self._new_unpacker(count))() if count else ()
        if not self._commit:
            problem = self._validate(flat)  # type: ignore[misc]
            if problem is not None:
                index = (self._own + problem[0]) & self._mask
                raise QueueProtocolError(self.name, f"entry at index {index}: {problem[1]}")
            self._advance(count)
        return flat

    def peek_many(self, max_count: int) -> list[tuple]:
        """Copy up to ``max_count`` entries out *without* releasing them: :meth:`release` then
        releases those used, so a PD killed before that leaves them queued for its restart
        instead of lost in its hands. A peek that met refused entries releases them all at once
        (its entries are then the caller's, ``peek_released``)."""
        count = self._take(max_count, 0)
        if count < 0:
            self._refuse_peer()
            return []
        self.peek_released = bool(self._ring.refused)
        if self.peek_released:
            self._report_refused()
            self._advance(self._ring.taken)
        flat = (self._unpackers.get(count) or self._new_unpacker(count))() if count else ()
        self._peeked = 0 if self.peek_released else count
        return list(zip(*[iter(flat)] * self._fmt.fields))

    def release(self, used: int) -> None:
        """Release the first ``used`` entries of the last :meth:`peek_many` (unless it released them)."""
        if self.peek_released:
            return
        if not 0 <= used <= self._peeked:
            raise ValueError(f"queue {self.name!r}: cannot release {used} entries: the last peek handed out "
                             f"{self._peeked}")
        self._peeked -= used
        self._advance(used)

    def _report_refused(self) -> None:
        """The last batch had entries refused in C (see :class:`sddf.net.queue.NetConsumer`)."""
        self.refused += self._ring.refused


def first_bad(flat: tuple, nfields: int, bad: Callable[..., bool]) -> int | None:
    """Position of the first entry in ``flat`` for which ``bad(*fields)`` holds, if any (slow path)."""
    for i in range(len(flat) // nfields):
        if bad(*flat[i * nfields:(i + 1) * nfields]):
            return i
    return None
