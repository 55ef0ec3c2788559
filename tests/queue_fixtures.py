"""Every queue kind behind one small interface, plus raw access to its memory as a peer sees it.

Header offsets and slot formats are written out here from sDDF's C headers (see
/work/shared/reference/sddf-facts.md) rather than taken from ``sddf.queue``, so the tests
check the library's layout instead of repeating it. An *item* is one entry tuple, or one
byte (an int) for the serial byte ring.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from hypothesis import strategies as st

from sddf.blk import queue as blk
from sddf.net import queue as net
from sddf.serial import queue as serial
from sddf.queue.entries import EntryConsumer, EntryProducer, Validator
from sddf.queue.ring import RingEnd

INDEX_FORMATS = {16: "<H", 32: "<I"}


def uint(bits: int) -> st.SearchStrategy[int]:
    """Any unsigned integer of ``bits`` bits."""
    return st.integers(0, (1 << bits) - 1)


class QueueMemory:
    """One queue's shared memory (anonymous mmaps) and a peer's raw view of its header and slots."""

    def __init__(self, kind: QueueKind, capacity: int, room: int | None = None) -> None:
        """Memory for ``room`` slots (default ``capacity``); ends attach with ``capacity``."""
        self.kind = kind
        self.capacity = capacity
        room = capacity if room is None else room
        self.header = mmap.mmap(-1, kind.memory_size(room))
        self.slots = kind.slot_view(self.header, room)

    def _index(self, offset: int) -> int:
        return struct.unpack_from(INDEX_FORMATS[self.kind.index_bits], self.header, offset)[0]

    def _set_index(self, offset: int, value: int) -> None:
        struct.pack_into(INDEX_FORMATS[self.kind.index_bits], self.header, offset,
                         value % self.kind.modulus)

    @property
    def tail(self) -> int:
        return self._index(self.kind.tail_offset)

    @tail.setter
    def tail(self, value: int) -> None:
        self._set_index(self.kind.tail_offset, value)

    @property
    def head(self) -> int:
        return self._index(self.kind.head_offset)

    @head.setter
    def head(self, value: int) -> None:
        self._set_index(self.kind.head_offset, value)

    def u32(self, offset: int) -> int:
        return struct.unpack_from("<I", self.header, offset)[0]

    def set_u32(self, offset: int, value: int) -> None:
        struct.pack_into("<I", self.header, offset, value)

    def slot_of(self, index: int) -> int:
        return index % self.capacity

    def item_at(self, index: int) -> Any:
        """The item stored in the slot of free-running ``index``."""
        return self.kind.read_slot(self.slots, self.slot_of(index))

    def put_item_at(self, index: int, item: Any) -> None:
        self.kind.write_slot(self.slots, self.slot_of(index), item)

    def snapshot(self) -> bytes:
        """Every byte of the queue (header and slots)."""
        return bytes(self.header) + bytes(self.slots)

    def producer(self) -> RingEnd:
        return self.kind.new_producer(self)

    def consumer(self, validate: Validator | None = None) -> RingEnd:
        return self.kind.new_consumer(self, validate)


NewConsumer = Callable[[QueueMemory, Validator | None], RingEnd]


@dataclass(frozen=True)
class QueueKind:
    """Layout of one queue kind, how to attach its ends, and how to move items through them."""

    name: str
    index_bits: int
    tail_offset: int
    head_offset: int
    header_size: int
    item: st.SearchStrategy[Any]  # items its consumer always accepts
    new_producer: Callable[[QueueMemory], RingEnd]
    new_consumer: NewConsumer
    flag_offset: int | None = None
    flag_waiter: str = "consumer"  # the end that requests signals (sDDF: net's consumer, serial's producer)
    plugged_offset: int | None = None

    @property
    def modulus(self) -> int:
        return 1 << self.index_bits

    def memory(self, capacity: int, start: int) -> QueueMemory:
        """Fresh zeroed memory for a queue whose tail and head both start at ``start``."""
        mem = QueueMemory(self, capacity)
        mem.tail = mem.head = start
        return mem

    # Overridden per item representation.
    def memory_size(self, capacity: int) -> int:
        raise NotImplementedError

    def slot_view(self, header: mmap.mmap, capacity: int) -> memoryview:
        raise NotImplementedError

    def read_slot(self, slots: memoryview, slot: int) -> Any:
        raise NotImplementedError

    def write_slot(self, slots: memoryview, slot: int, item: Any) -> None:
        raise NotImplementedError

    def put(self, end: Any, item: Any) -> bool:
        raise NotImplementedError

    def put_many(self, end: Any, items: Sequence[Any]) -> int:
        raise NotImplementedError

    def take(self, end: Any) -> Any:
        """One item, or None if the queue is empty."""
        raise NotImplementedError

    def take_many(self, end: Any, max_count: int | None = None) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class EntryKind(QueueKind):
    """A queue of fixed-size struct entries following the header in the same region."""

    entry_format: str = ""

    def memory_size(self, capacity: int) -> int:
        return self.header_size + struct.calcsize(self.entry_format) * capacity

    def slot_view(self, header: mmap.mmap, capacity: int) -> memoryview:
        return memoryview(header)[self.header_size:]

    def read_slot(self, slots: memoryview, slot: int) -> tuple:
        return struct.unpack_from(self.entry_format, slots, slot * struct.calcsize(self.entry_format))

    def write_slot(self, slots: memoryview, slot: int, item: tuple) -> None:
        struct.pack_into(self.entry_format, slots, slot * struct.calcsize(self.entry_format), *item)

    def put(self, end: EntryProducer, item: tuple) -> bool:
        return end.enqueue(item)

    def put_many(self, end: EntryProducer, items: Sequence[tuple]) -> int:
        return end.enqueue_many(items)

    def take(self, end: EntryConsumer) -> tuple | None:
        return end.dequeue()

    def take_many(self, end: EntryConsumer, max_count: int | None = None) -> list[tuple]:
        return end.dequeue_many(max_count)


@dataclass(frozen=True)
class ByteKind(QueueKind):
    """The serial byte ring: a header region plus a separate data region of ``capacity`` bytes."""

    def memory_size(self, capacity: int) -> int:
        return self.header_size

    def slot_view(self, header: mmap.mmap, capacity: int) -> memoryview:
        return memoryview(mmap.mmap(-1, capacity))

    def read_slot(self, slots: memoryview, slot: int) -> int:
        return slots[slot]

    def write_slot(self, slots: memoryview, slot: int, item: int) -> None:
        slots[slot] = item

    def put(self, end: serial.SerialProducer, item: int) -> bool:
        return end.enqueue(bytes([item])) == 1

    def put_many(self, end: serial.SerialProducer, items: Sequence[int]) -> int:
        return end.enqueue(bytes(items))

    def take(self, end: serial.SerialConsumer) -> int | None:
        got = end.dequeue(1)
        return got[0] if got else None

    def take_many(self, end: serial.SerialConsumer, max_count: int | None = None) -> list[int]:
        return list(end.dequeue(max_count))


NET = EntryKind(
    name="net", index_bits=16, tail_offset=0, head_offset=2, header_size=8, flag_offset=4,
    entry_format="<QHB5x", item=st.tuples(uint(64), uint(16), uint(6)),  # oid is a 6-bit field
    new_producer=lambda m: net.NetProducer(m.kind.name, m.header, m.capacity),
    new_consumer=lambda m, v: net.NetConsumer(m.kind.name, m.header, m.capacity, v))

BLK_REQ = EntryKind(
    name="blk.req", index_bits=32, tail_offset=4, head_offset=0, header_size=16, plugged_offset=8,
    entry_format="<I4xQQH2xI",
    item=st.tuples(st.sampled_from(list(blk.BlkReqCode)).map(int), uint(64), uint(64), uint(16), uint(32)),
    new_producer=lambda m: blk.ReqProducer(m.kind.name, m.header, m.capacity),
    new_consumer=lambda m, v: blk.ReqConsumer(m.kind.name, m.header, m.capacity, v))


def _no_validator(attach: Callable[[QueueMemory], RingEnd]) -> NewConsumer:
    """A consumer constructor for kinds whose consumer takes no validator (it has its own or none)."""
    def new_consumer(mem: QueueMemory, validate: Validator | None) -> RingEnd:
        assert validate is None, f"a {mem.kind.name} consumer takes no validator"
        return attach(mem)
    return new_consumer


BLK_RESP = EntryKind(
    name="blk.resp", index_bits=32, tail_offset=4, head_offset=0, header_size=8,
    entry_format="<IH2xI",
    item=st.tuples(st.sampled_from(list(blk.BlkRespStatus)).map(int), uint(16), uint(32)),
    new_producer=lambda m: blk.RespProducer(m.kind.name, m.header, m.capacity),
    new_consumer=_no_validator(lambda m: blk.RespConsumer(m.kind.name, m.header, m.capacity)))

SERIAL = ByteKind(
    name="serial", index_bits=32, tail_offset=0, head_offset=4, header_size=12, flag_offset=8,
    flag_waiter="producer",
    item=uint(8),
    new_producer=lambda m: serial.SerialProducer(m.kind.name, m.header, m.slots, m.capacity),
    new_consumer=_no_validator(lambda m: serial.SerialConsumer(m.kind.name, m.header, m.slots, m.capacity)))

KINDS = (NET, BLK_REQ, BLK_RESP, SERIAL)
KIND_IDS = [k.name for k in KINDS]
CAPACITIES = (1, 2, 4, 8, 16, 32)
ANY_CAPACITIES = (3, 6, 12, 24, 384)  # 32-bit kinds take these too (sdfgen: a sum of client queues)


def near_wrap(kind: QueueKind, capacity: int) -> st.SearchStrategy[int]:
    """A starting index within three capacities of where the free-running index wraps to 0; for a
    capacity that does not divide 2^32, one far from it (entry i lives at slot i % capacity, so
    there, as in sDDF, the wrap after 2^32 entries can put two entries in one slot)."""
    if kind.modulus % capacity:
        return st.integers(0, kind.modulus - (1 << 20))
    return st.integers(kind.modulus - 3 * capacity, kind.modulus - 1)


def capacities(kind: QueueKind) -> st.SearchStrategy[int]:
    """Capacities an end of ``kind`` takes: powers of two, and any with 32-bit indices."""
    return st.sampled_from(CAPACITIES + (ANY_CAPACITIES if kind.modulus > 1 << 16 else ()))
