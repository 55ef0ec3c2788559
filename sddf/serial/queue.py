"""sDDF serial queues (include/sddf/serial/queue.h): a byte ring with its data in a separate region.

Byte layout (little-endian): a 12-byte header {u32 tail @0, u32 head @4, u32
producer_signalled @8}; the data region holds ``capacity`` bytes, byte i of the stream at
i % capacity. The flag lives on the producer side: a producer that finds the queue full
requests a signal, and the consumer notifies it once it has made room.
"""
from __future__ import annotations

from typing import Any

from sddf import atomic
from sddf.queue.ring import Layout, RingEnd

HEADER_SIZE = 12
LAYOUT = Layout(tail_offset=0, head_offset=4, index_bits=32, flag_offset=8, flag_waiter_is_producer=True)


class _SerialEnd(RingEnd):
    def __init__(self, name: str, header: Any, data: Any, capacity: int, producer: bool) -> None:
        super().__init__(name, memoryview(header).cast("B")[:HEADER_SIZE], LAYOUT, capacity, producer)
        view = memoryview(data).cast("B")
        if len(view) < capacity:
            raise ValueError(f"queue {name!r}: data region of {len(view)} bytes is smaller than "
                             f"its capacity {capacity}")
        self._data = view[:capacity]


class SerialProducer(_SerialEnd):
    """The writing end of a serial queue."""

    def __init__(self, name: str, header: Any, data: Any, capacity: int) -> None:
        super().__init__(name, header, data, capacity, True)

    def enqueue(self, data: bytes | bytearray | memoryview) -> int:
        """Copy as much of ``data`` as fits, publish it with one store; return how many bytes."""
        count = min(len(data), self.capacity - self._refresh())
        if count <= 0:
            return 0
        done = 0
        for slot, n in self._runs(count):
            self._data[slot:slot + n] = data[done:done + n]
            done += n
        self._advance(count)
        return count

    def request_room(self, count: int) -> bool:
        """Before waiting for room for ``count`` bytes (a batch that must go whole): request a
        signal, seq_cst fence, re-check. True → the room is there (request cancelled): go on."""
        self.request_signal()
        atomic.fence()
        if self.free_slots() >= count:
            self.cancel_signal()
            return True
        return False


class SerialConsumer(_SerialEnd):
    """The reading end of a serial queue."""

    def __init__(self, name: str, header: Any, data: Any, capacity: int) -> None:
        super().__init__(name, header, data, capacity, False)

    def dequeue(self, max_count: int | None = None) -> bytes:
        """Take up to ``max_count`` bytes (all available if None), releasing them with one store."""
        out = self.peek(max_count)
        if out:
            self._advance(len(out))
        return out

    def peek(self, max_count: int | None = None) -> bytes:
        """A copy of up to ``max_count`` bytes from the front (all available if None), left in the
        queue until :meth:`release` (what a consumer that may die before using them holds)."""
        count = self._refresh()
        if max_count is not None and max_count < count:
            count = max_count
        if count <= 0:
            return b""
        return b"".join(bytes(self._data[slot:slot + n]) for slot, n in self._runs(count))

    def release(self, count: int) -> None:
        """Take the first ``count`` bytes (no more than :meth:`peek` returned), with one store."""
        self._advance(count)
