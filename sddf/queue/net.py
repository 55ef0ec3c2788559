"""sDDF net queues (include/sddf/network/queue.h): free and active queues of buffer descriptors.

Byte layout (little-endian): an 8-byte header {u16 tail, u16 head, u32 consumer_signalled}
then ``capacity`` 16-byte descriptors {u64 io_or_offset, u16 len, u8 oid (low 6 bits), pad}.
Indices are free-running u16. Each direction between two components is a free/active pair.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from sddf.queue.entries import EntryConsumer, EntryFormat, EntryProducer, Validator, first_bad
from sddf.queue.ring import Layout

NET_BUFFER_SIZE = 2048
MAX_OID = 63  # oid is a 6-bit field in sDDF's descriptor
HEADER_SIZE = 8
LAYOUT = Layout(tail_offset=0, head_offset=2, index_bits=16, flag_offset=4)


class NetBuffDesc(NamedTuple):
    """A buffer descriptor: where the buffer is (offset or io address) and how many bytes it holds.

    Any ``(io_or_offset, len, oid)`` tuple can be enqueued; dequeues return plain tuples."""

    io_or_offset: int
    len: int = 0
    oid: int = 0


FORMAT = EntryFormat("QHB5x", HEADER_SIZE)
DESC_SIZE = FORMAT.size


def queue_size(capacity: int) -> int:
    """Bytes one net queue of ``capacity`` descriptors occupies."""
    return FORMAT.region_size(capacity)


class BufferValidator:
    """Accept only descriptors naming a whole buffer inside [base, base+size) holding ≤ buffer_size
    bytes, with a 6-bit oid. Callable on a flat batch (a :data:`Validator`); its ``c_limits`` let
    a consumer run the same check in C on each batch it copies out of the ring."""

    def __init__(self, base: int, size: int, buffer_size: int = NET_BUFFER_SIZE) -> None:
        self.base, self.size, self.buffer_size = base, size, buffer_size
        self.highest = base + size - buffer_size
        self.c_limits = (base, self.highest, buffer_size, MAX_OID)  # lowest and highest offset, len, oid

    def _bad(self, offset: int, length: int, oid: int) -> bool:
        return not self.base <= offset <= self.highest or length > self.buffer_size or oid > MAX_OID

    def __call__(self, flat: tuple) -> tuple[int, str] | None:
        offsets = flat[0::3]
        if (min(offsets) >= self.base and max(offsets) <= self.highest and max(flat[1::3]) <= self.buffer_size
                and max(flat[2::3]) <= MAX_OID):
            return None
        i = first_bad(flat, 3, self._bad)
        assert i is not None
        return i, (f"descriptor io_or_offset={flat[3 * i]:#x} len={flat[3 * i + 1]} oid={flat[3 * i + 2]} "
                   f"is not a buffer of ≤{self.buffer_size} bytes inside [{self.base:#x}, "
                   f"{self.base + self.size:#x}) with a 6-bit oid")


def buffer_validator(base: int, size: int, buffer_size: int = NET_BUFFER_SIZE) -> BufferValidator:
    """See :class:`BufferValidator`."""
    return BufferValidator(base, size, buffer_size)


class NetProducer(EntryProducer):
    """The producing end of one net queue."""

    def __init__(self, name: str, buffer: Any, capacity: int) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, FORMAT)


class NetConsumer(EntryConsumer):
    """The consuming end of one net queue; descriptors are checked by ``validate`` if given."""

    def __init__(self, name: str, buffer: Any, capacity: int,
                 validate: Validator | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, FORMAT, validate)


def producing_side(name: str, free: Any, active: Any, capacity: int,
                   validate: Validator | None = None) -> tuple[NetConsumer, NetProducer]:
    """Attach as the end that fills buffers: it takes them from ``free`` and publishes them on
    ``active`` (a driver's rx side, a client's tx side). ``validate`` vets what ``free`` holds."""
    return (NetConsumer(f"{name}.free", free, capacity, validate),
            NetProducer(f"{name}.active", active, capacity))


def consuming_side(name: str, free: Any, active: Any, capacity: int,
                   validate: Validator | None = None) -> tuple[NetProducer, NetConsumer]:
    """Attach as the end that takes filled buffers from ``active`` and gives them back on ``free``
    (the other end of :func:`producing_side`). ``validate`` vets what ``active`` holds."""
    return (NetProducer(f"{name}.free", free, capacity),
            NetConsumer(f"{name}.active", active, capacity, validate))


def fill_free(free: NetProducer, base: int, count: int, buffer_size: int = NET_BUFFER_SIZE) -> None:
    """Put ``count`` consecutive buffers starting at ``base`` on a free queue (sDDF's net_buffers_init)."""
    descs = [NetBuffDesc(base + i * buffer_size, 0, 0) for i in range(count)]
    if free.enqueue_many(descs) != count:
        raise ValueError(f"queue {free.name!r}: cannot hold {count} buffers (capacity {free.capacity})")


def is_buffer_offset(offset: int, region_size: int, buffer_size: int = NET_BUFFER_SIZE) -> bool:
    """Whether ``offset`` starts a whole buffer of a region of ``region_size`` bytes."""
    return offset >= 0 and offset % buffer_size == 0 and offset + buffer_size <= region_size


class BufferSpace:
    """Names net buffers by address (an io address, or an offset) across one or more regions.

    ``spans`` are ``(base address, memoryview of the region)``. :meth:`slot` gives the whole
    buffer at an address, or None if the address is not the start of a buffer inside a span —
    the check every consumer of descriptors from an untrusted peer needs. The buffers are
    sliced once here, so a lookup per packet is one dict access.
    """

    def __init__(self, spans: list[tuple[int, Any]], buffer_size: int = NET_BUFFER_SIZE) -> None:
        self.buffer_size = buffer_size
        self._slots: dict[int, memoryview] = {}
        for base, region in sorted(spans, key=lambda span: span[0]):
            view = memoryview(region)
            for off in range(0, len(view) - buffer_size + 1, buffer_size):
                self._slots[base + off] = view[off:off + buffer_size]
        self.slot = self._slots.get  # address -> the buffer's memoryview, or None

    def addresses(self) -> list[int]:
        """The address of every buffer in every span."""
        return list(self._slots)
