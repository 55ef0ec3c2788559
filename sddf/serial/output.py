"""A serial client's output (sans-I/O): bytes onto its tx queue, the rest held until virt_tx makes room.

sDDF's protocol for a producer: after publishing, notify the consumer (the caller does, when
:meth:`SerialOutput.write` or :meth:`SerialOutput.flush` returns True); when the queue is full,
request a signal (``producer_signalled``) and keep the rest until virt_tx gives it. What is held
is bounded: output beyond ``backlog_max`` bytes is dropped and counted (``tx_dropped``).
"""
from __future__ import annotations

from collections import Counter

from sddf.serial.queue import SerialProducer

BACKLOG_MAX = 1 << 20


class SerialOutput:
    """The writing side of one serial client: its tx queue and a bounded backlog."""

    def __init__(self, queue: SerialProducer, counters: Counter[str], backlog_max: int = BACKLOG_MAX) -> None:
        self.queue = queue
        self.counters = counters
        self.backlog_max = backlog_max
        self.backlog = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Queue ``data`` behind what is held; True if anything was published (notify virt_tx)."""
        room = self.backlog_max - len(self.backlog)
        if len(data) > room:
            self.counters["tx_dropped"] += len(data) - room
            data = data[:room]
        self.backlog += data
        return self.flush()

    def flush(self) -> bool:
        """Move the backlog onto the queue, asking for a signal while some is left; True if
        anything was published (notify virt_tx)."""
        published = False
        while self.backlog:
            sent = self.queue.enqueue(self.backlog)
            if sent:
                del self.backlog[:sent]
                self.counters["tx_bytes"] += sent
                published = True
            if self.backlog and not self.queue.request_and_recheck():
                break  # full: virt_tx signals when it has made room
        return published
