"""How full a queue is, read from its header by its kind (``QueueInfo.kind``): for the monitor and ``sddf top``."""
from __future__ import annotations

from sddf import atomic
from sddf.blk import queue as blk
from sddf.net import queue as net
from sddf.serial import queue as serial

#: kind -> (tail offset, head offset, index bits)
HEADERS = {
    "net": (net.LAYOUT.tail_offset, net.LAYOUT.head_offset, 16),
    "blk.req": (blk.LAYOUT.tail_offset, blk.LAYOUT.head_offset, 32),
    "blk.resp": (blk.LAYOUT.tail_offset, blk.LAYOUT.head_offset, 32),
    "serial": (serial.LAYOUT.tail_offset, serial.LAYOUT.head_offset, 32),
}


def occupancy(ptr: atomic.Pointer, offset: int, kind: str) -> int:
    """Entries (bytes, for serial) published and not yet consumed in the queue at ``offset``."""
    tail_off, head_off, bits = HEADERS[kind]
    load = atomic.LOADS[bits]
    return (load(ptr, offset + tail_off) - load(ptr, offset + head_off)) & ((1 << bits) - 1)
