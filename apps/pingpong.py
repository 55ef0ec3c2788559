"""Ping-pong demo: two components bounce counters through an sDDF net queue pair.

Ping owns the buffers: it writes a counter into a buffer and enqueues it on ``active``;
Pong adds one and hands the buffer back on ``free``; Ping checks the value and sends it again.
Both follow sDDF's signalling protocol, so an idle pair sleeps.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from sddf.component import Component
from sddf.net.queue import NET_BUFFER_SIZE, BufferSpace, consuming_side, producing_side
from sddf.queue.ring import drain

COUNTER = struct.Struct("<Q")


@dataclass
class PingPongConfig:
    """One end of the ping-pong demo: the channel to its peer, the queue capacity, the buffers
    in flight (ping only) and how often to report."""

    peer: int
    capacity: int
    in_flight: int = 8
    report_every_s: float = 1.0


class _End(Component):
    kind = "pingpong"
    Config = PingPongConfig
    produces_active = False

    def init(self) -> None:
        self.data = self.regions["data"]
        attach = producing_side if self.produces_active else consuming_side
        free, active = attach(self.name, self.regions["free"], self.regions["active"], self.config.capacity,
                              BufferSpace([(0, self.data)]), self.refuse)
        self.incoming, self.outgoing = (free, active) if self.produces_active else (active, free)
        self.ledger.track(free, active)
        if self.ledger.fresh:  # after a restart they are in flight
            self.first_buffers()
        self.notified(self.config.peer)  # what arrived while we were down, and a signal requested

    def first_buffers(self) -> None:
        """A fresh system: put the first buffers in flight (the end that owns them)."""

    def notified(self, ch: int) -> None:
        drain(self.incoming, self.bounce)

    def bounce(self, descs: list[tuple]) -> None:
        replies = [(offset, COUNTER.size, 0) for offset, _, _ in descs
                   if self.step(offset, COUNTER.unpack_from(self.data, offset)[0])]
        self.outgoing.enqueue_many(replies)
        if replies and self.outgoing.signal_needed():
            self.notify(self.config.peer)

    def step(self, offset: int, value: int) -> bool:
        raise NotImplementedError


class Ping(_End):
    """Starts the counters, checks each comes back incremented, reports the bounce rate."""

    produces_active = True

    def init(self) -> None:
        self.expected: dict[int, int] = {}
        self.bounces = 0
        self.since = time.monotonic()
        super().init()

    def first_buffers(self) -> None:
        self.bounce([(i * NET_BUFFER_SIZE, 0, 0) for i in range(self.config.in_flight)])

    def step(self, offset: int, value: int) -> bool:
        want = self.expected.get(offset)
        if want is not None and value != want:
            raise RuntimeError(f"buffer {offset:#x} came back with {value}, expected {want}")
        self.bounces += want is not None
        self.expected[offset] = value + 2
        COUNTER.pack_into(self.data, offset, value + 1)
        now = time.monotonic()
        if now - self.since >= self.config.report_every_s:
            self.log(f"{self.bounces / (now - self.since):,.0f} round trips/s, counters ok")
            self.bounces, self.since = 0, now
        return True


class Pong(_End):
    """Adds one to every counter it is sent and sends the buffer back."""

    def step(self, offset: int, value: int) -> bool:
        COUNTER.pack_into(self.data, offset, value + 1)
        return True
