"""sDDF net queues (include/sddf/network/queue.h): free and active queues of buffer descriptors.

Byte layout (little-endian): an 8-byte header {u16 tail, u16 head, u32 consumer_signalled}
then ``capacity`` 16-byte descriptors {u64 io_or_offset, u16 len, u8 oid (low 6 bits), pad}.
Indices are free-running u16. Each direction between two components is a free/active pair.

A consuming end hands out only checked descriptors: each must name the start of a whole
buffer of its :class:`BufferSpace` and hold at most a buffer's bytes; its oid is masked to
the 6 bits sDDF's bit-field has. Anything else is consumed, never handed out, counted on the
end (``refused``) and reported to its ``on_refuse(counter, message)`` — a component passes its
own :meth:`~sddf.component.Component.refuse`, which also hears of a peer's broken index
(then the end resets the queue to empty instead of raising, see ``RingEnd._recover``). A producing end refuses to write an oid over 63.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from sddf import atomic
from sddf.queue.entries import EntryConsumer, EntryFormat, EntryProducer
from sddf.queue.ring import Layout, OnRefuse

NET_BUFFER_SIZE = 2048
MAX_OID = 63  # oid is a 6-bit field in sDDF's descriptor
HEADER_SIZE = 8
LAYOUT = Layout(tail_offset=0, head_offset=2, index_bits=16, flag_offset=4)
MAX_LEN = 0xFFFF


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


class BufferSpace:
    """The net buffers a component can name, in the address space its descriptors use.

    ``spans`` are ``(base address, region)``: the region is a memoryview of a mapped data
    region, or its size in bytes for buffers this component only passes on (virt_tx never maps
    the data it forwards). :meth:`slot` gives the whole buffer at an address (None if the
    address does not start a buffer of a mapped span); :meth:`span_of` says which span holds
    it; :meth:`rebase` names the same buffer in another space with the same layout of spans
    (driver io addresses ↔ client offsets).
    """

    def __init__(self, spans: Sequence[tuple[int, Any]], buffer_size: int = NET_BUFFER_SIZE) -> None:
        self.buffer_size = buffer_size
        self.bases: list[int] = []
        self.sizes: list[int] = []
        self._slots: dict[int, memoryview] = {}
        self._order: list[int] = []  # every buffer address, span by span
        for base, region in spans:
            size = region if isinstance(region, int) else len(region)
            count = size // buffer_size
            if count <= 0:
                raise ValueError(f"a span of {size} bytes at {base:#x} holds no {buffer_size}-byte buffer")
            self.bases.append(base)
            self.sizes.append(count * buffer_size)
            self._order += range(base, base + count * buffer_size, buffer_size)
            if not isinstance(region, int):
                view = memoryview(region)
                for off in range(0, count * buffer_size, buffer_size):
                    self._slots[base + off] = view[off:off + buffer_size]
        self.slot: Callable[[int], memoryview | None] = self._slots.get  # one dict access per buffer
        self._c_spans = atomic.new_spans([(b, b + s - buffer_size) for b, s in zip(self.bases, self.sizes)])

    def addresses(self) -> list[int]:
        """The address of every buffer, span by span."""
        return list(self._order)

    def span_of(self, address: int) -> int:
        """The index of the span holding ``address`` (-1: none)."""
        for i, (base, size) in enumerate(zip(self.bases, self.sizes)):
            if base <= address < base + size:
                return i
        return -1

    def rebase(self, address: int, other: "BufferSpace", span: int = 0, other_span: int = 0) -> int:
        """``address`` in our span ``span`` named in ``other``'s span ``other_span`` (the same
        buffer seen from another address space)."""
        return address - self.bases[span] + other.bases[other_span]

    def describe(self) -> str:
        ranges = ", ".join(f"[{b:#x}, {b + s:#x})" for b, s in zip(self.bases, self.sizes))
        return f"a {self.buffer_size}-byte buffer in {ranges}"


class NetProducer(EntryProducer):
    """The producing end of one net queue."""

    def __init__(self, name: str, buffer: Any, capacity: int, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, FORMAT, on_refuse)
        self._ring.check_net = 1  # refuse an oid that does not fit its 6 bits


class NetConsumer(EntryConsumer):
    """The consuming end of one net queue: hands out descriptors naming whole buffers of
    ``buffers`` (any address if None) holding ≤ a buffer's bytes, oid masked to 6 bits."""

    def __init__(self, name: str, buffer: Any, capacity: int, buffers: BufferSpace | None = None,
                 on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, FORMAT, on_refuse=on_refuse)
        self.buffers = buffers
        r = self._ring
        r.check_net = 1
        if buffers is not None:
            r.spans, r.span_count = buffers._c_spans, len(buffers.bases)
            r.align, r.max_len = buffers.buffer_size, buffers.buffer_size
        else:
            self._any = atomic.new_spans([(0, 2 ** 64 - 1)])
            r.spans, r.span_count, r.align, r.max_len = self._any, 1, 1, MAX_LEN

    def _report_refused(self) -> None:
        super()._report_refused()
        if self.on_refuse is None:
            return
        r = self._ring
        where = self.buffers.describe() if self.buffers is not None else "any buffer"
        message = (f"queue {self.name!r}: descriptor io_or_offset={r.bad_io:#x} len={r.bad_len} "
                   f"oid={r.bad_oid} is not {where} holding ≤{r.max_len} bytes")
        for _ in range(r.refused):
            self.on_refuse(f"{self.name}.refused", message)


def producing_side(name: str, free: Any, active: Any, capacity: int, buffers: BufferSpace | None = None,
                   on_refuse: OnRefuse | None = None) -> tuple[NetConsumer, NetProducer]:
    """Attach as the end that fills buffers: it takes them from ``free`` (checked against
    ``buffers``) and publishes them on ``active`` (a driver's rx side, a client's tx side)."""
    return (NetConsumer(f"{name}.free", free, capacity, buffers, on_refuse),
            NetProducer(f"{name}.active", active, capacity, on_refuse))


def consuming_side(name: str, free: Any, active: Any, capacity: int, buffers: BufferSpace | None = None,
                   on_refuse: OnRefuse | None = None) -> tuple[NetProducer, NetConsumer]:
    """Attach as the end that takes filled buffers from ``active`` (checked against ``buffers``)
    and gives them back on ``free`` (the other end of :func:`producing_side`)."""
    return (NetProducer(f"{name}.free", free, capacity, on_refuse),
            NetConsumer(f"{name}.active", active, capacity, buffers, on_refuse))


def fill_free(free: NetProducer, addresses: Sequence[int]) -> None:
    """Put a buffer at each of ``addresses`` on a free queue (sDDF's net_buffers_init)."""
    if free.enqueue_many([(a, 0, 0) for a in addresses]) != len(addresses):
        raise ValueError(f"queue {free.name!r}: cannot hold {len(addresses)} buffers (capacity {free.capacity})")
