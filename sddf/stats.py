"""A PD's counters and heartbeat, in a small shared page the monitor reads (``sddf counters``).

Layout: {u32 sequence, u32 length} then ``length`` bytes of msgpack; the page's last 8 bytes are
the heartbeat, a u64 the PD's loop increments on entering and on leaving its handlers (odd: in a
handler), which the monitor's watchdog reads. The writer makes the
sequence odd, writes, makes it even (a seqlock); a reader retries until it sees the same
even sequence before and after copying, so it never decodes a half-written snapshot. The
sequence moves with every publish, so the monitor, having sent a PD :data:`PUBLISH_SIGNAL`,
knows the PD has answered once its :func:`sequence` moved.
"""
from __future__ import annotations

import signal
from typing import Any

import msgpack

from sddf import atomic

STATS_SIZE = 4096
HEADER = 8
HEARTBEAT_OFFSET = STATS_SIZE - 8
DATA_MAX = HEARTBEAT_OFFSET - HEADER
READ_ATTEMPTS = 100
#: asks a PD to publish its counters now. SIGURG because its default action is to be ignored: a PD
#: that has not installed its handler yet (still starting) is not killed by it, and components
#: keep SIGUSR1/SIGUSR2 for themselves.
PUBLISH_SIGNAL = signal.SIGURG


class StatsWriter:
    def __init__(self, page: Any) -> None:
        self._page = page
        self._ptr = atomic.pointer(page)
        self._seq = atomic.load_acquire_u32(self._ptr, 0) & ~1

    def publish(self, counters: dict[str, int]) -> None:
        data = msgpack.packb(dict(counters))
        if len(data) > DATA_MAX:
            data = msgpack.packb({"stats_overflow": len(counters)})
        self._seq += 1
        atomic.store_release_u32(self._ptr, 0, self._seq)
        atomic.fence()
        self._page[HEADER:HEADER + len(data)] = data
        atomic.store_release_u32(self._ptr, 4, len(data))
        self._seq += 1
        atomic.store_release_u32(self._ptr, 0, self._seq)


def sequence(page: Any) -> int:
    """The page's publish sequence (it moves with every publish)."""
    return atomic.load_acquire_u32(atomic.pointer(page), 0)


def heartbeat(page: Any) -> int:
    """The PD's heartbeat (odd while it is in a handler)."""
    return atomic.load_acquire_u64(atomic.pointer(page), HEARTBEAT_OFFSET)


def read_stats(page: Any) -> dict[str, int]:
    """The latest complete snapshot (empty if none was published or the writer never settles)."""
    ptr = atomic.pointer(page)
    for _ in range(READ_ATTEMPTS):
        before = atomic.load_acquire_u32(ptr, 0)
        if before & 1:
            continue
        length = min(atomic.load_acquire_u32(ptr, 4), DATA_MAX)
        data = bytes(page[HEADER:HEADER + length])
        atomic.fence()
        if atomic.load_acquire_u32(ptr, 0) == before:
            try:
                return msgpack.unpackb(data) if length else {}
            except (ValueError, msgpack.UnpackException):
                return {"stats_garbled": 1}
    return {}
