"""The plumbing every network client shares: rx frames in, tx frames out, through sDDF queues.

Subclasses implement :meth:`received` (a batch of frames as bytes) and call :meth:`send`
with frames to transmit; frames wait in a bounded backlog while no tx buffer is free.
"""
from __future__ import annotations

from collections import deque

from sddf.component import Component
from sddf.config import NetClientConfig
from sddf.queue.net import BufferSpace, consuming_side, producing_side
from sddf.signal import drain, request_and_recheck, signal_needed

BATCH = 64
BACKLOG_MAX = 4096


class NetClient(Component):
    Config = NetClientConfig

    def init(self) -> None:
        cfg = self.config
        self.rx_free, self.rx_active = consuming_side(f"{self.name}.rx", *cfg.rx.views(self.regions))
        self.tx_free, self.tx_active = producing_side(f"{self.name}.tx", *cfg.tx.views(self.regions))
        self.rx_space = BufferSpace([(0, self.regions[cfg.rx_data.map])])
        self.tx_space = BufferSpace([(0, self.regions[cfg.tx_data.map])])
        self.backlog: deque[bytes] = deque()
        self.tx_buffers: list[int] = []
        fresh = self.tx_active.index == 0 and self.tx_free.index == 0
        if fresh:
            self.tx_buffers = self.tx_space.addresses()[::-1]
            if cfg.owns_rx_buffers:
                self.rx_free.enqueue_many([(a, 0, 0) for a in self.rx_space.addresses()][:cfg.rx.capacity])
                self.notify(cfg.rx.channel)

    def notified(self, ch: int) -> None:
        if ch == self.config.rx.channel:
            drain(self.rx_active, self._receive, BATCH)
        if ch == self.config.tx.channel or self.backlog:
            self._transmit()

    def _receive(self, descs: list[tuple]) -> None:
        frames, returned = [], []
        for off, length, oid in descs:
            buf = self.rx_space.slot(off)
            if buf is None:
                self.counters["rx_bad_buffer"] += 1
                continue
            returned.append((off, 0, oid))
            if 0 < length <= len(buf):
                frames.append(bytes(buf[:length]))
            else:
                self.counters["rx_bad_length"] += 1
        self.rx_free.enqueue_many(returned)
        if returned and signal_needed(self.rx_free.flag):
            self.notify(self.config.rx.channel)
        self.received(frames)
        self._transmit()

    def received(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for transmission (sent when this handler pass ends)."""
        if len(self.backlog) >= BACKLOG_MAX:
            self.counters["tx_backlog_dropped"] += 1
            return
        self.backlog.append(frame)

    def _transmit(self) -> None:
        while self.backlog:
            if not self.tx_buffers:
                got = self.tx_free.dequeue_many(BATCH)
                self.tx_buffers = [off for off, _, _ in got if self.tx_space.slot(off) is not None]
                if len(got) > len(self.tx_buffers):
                    self.counters["tx_bad_return"] += len(got) - len(self.tx_buffers)
                if not self.tx_buffers:
                    if request_and_recheck(self.tx_free.flag, lambda: not self.tx_free.empty()):
                        continue
                    return  # virt_tx notifies us when it returns buffers
            out = []
            while self.backlog and self.tx_buffers and len(out) < BATCH:
                frame = self.backlog.popleft()
                off = self.tx_buffers.pop()
                self.tx_space.slot(off)[:len(frame)] = frame
                out.append((off, len(frame), 0))
            self.tx_active.enqueue_many(out)
            if signal_needed(self.tx_active.flag):
                self.notify(self.config.tx.channel)
