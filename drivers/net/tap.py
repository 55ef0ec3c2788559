"""Net driver for a host TAP device: frames from the TAP fd into rx buffers, tx buffers onto the TAP.

RX: take buffers from the rx free queue, read one frame into each (straight into shared
memory), publish them on rx active in batches. TX: drain tx active, write each frame, return
the buffer on tx free. Buffers are named by io address; one the driver cannot map to a
granted region, or with a bad length, is refused and counted, never trusted.
"""
from __future__ import annotations

import os

from sddf.component import Component
from sddf.config import NetDriverConfig
from sddf.queue.net import BufferSpace, consuming_side, producing_side
from sddf.signal import drain, request_and_recheck, signal_needed

BATCH = 64


class TapDriver(Component):
    kind = "net.driver"
    Config = NetDriverConfig

    def init(self) -> None:
        cfg = self.config
        self.tap = self.pd.irqs[cfg.irq]
        self.rx_free, self.rx_active = producing_side(f"{self.name}.rx", *cfg.rx.views(self.regions))
        self.tx_free, self.tx_active = consuming_side(f"{self.name}.tx", *cfg.tx.views(self.regions))
        self.rx_space = BufferSpace([(cfg.rx_data.io_addr, self.regions[cfg.rx_data.map])])
        self.tx_space = BufferSpace([(d.io_addr, self.regions[d.map]) for d in cfg.tx_data])
        self.spare: list[tuple] = []     # rx buffers taken from the free queue, not yet filled
        self.rx_waiting_for_buffers = False
        self.receive()
        self.transmit()

    def notified(self, ch: int) -> None:
        cfg = self.config
        if ch == cfg.irq or (ch == cfg.rx.channel and self.rx_waiting_for_buffers):
            self.receive()
        if ch == cfg.tx.channel:
            self.transmit()

    # ---- rx -------------------------------------------------------------------------------
    def receive(self) -> None:
        """Read frames until the TAP is empty (then ack its irq) or we run out of buffers."""
        free, active = self.rx_free, self.rx_active
        while True:
            if not self.spare:
                self.spare = free.dequeue_many(BATCH)[::-1]
                if not self.spare and not request_and_recheck(free.flag, lambda: not free.empty()):
                    self.rx_waiting_for_buffers = True  # virt_rx notifies when it returns buffers
                    break
                continue
            filled, drained = self._fill()
            if filled:
                active.enqueue_many(filled)
                self.counters["rx_frames"] += len(filled)
                if signal_needed(active.flag):
                    self.notify(self.config.rx.channel)
            self.counters["rx_spare"] = len(self.spare)
            if drained:
                self.rx_waiting_for_buffers = False
                self.irq_ack(self.config.irq)
                break

    def _fill(self) -> tuple[list[tuple], bool]:
        """Read frames into spare buffers; return the filled descriptors and whether the TAP is empty."""
        filled = []
        while self.spare and len(filled) < BATCH:
            io = self.spare[-1][0]
            buf = self.rx_space.slot(io)
            if buf is None:
                self.spare.pop()
                self.counters["rx_bad_buffer"] += 1
                continue
            try:
                n = os.readv(self.tap, [buf])
            except BlockingIOError:
                return filled, True
            self.spare.pop()
            filled.append((io, n, 0))
        return filled, False

    # ---- tx -------------------------------------------------------------------------------
    def transmit(self) -> None:
        """Write every frame virt_tx queued, returning each buffer on tx free."""
        drain(self.tx_active, self._write, BATCH)

    def _write(self, descs: list[tuple]) -> None:
        done = []
        for io, length, oid in descs:
            buf = self.tx_space.slot(io)
            if buf is None:
                self.counters["tx_bad_buffer"] += 1
                continue  # not a buffer we can name: it cannot be returned either
            done.append((io, 0, oid))
            if not 0 < length <= len(buf):
                self.counters["tx_bad_length"] += 1
                continue
            try:
                os.write(self.tap, buf[:length])
                self.counters["tx_frames"] += 1
            except OSError:
                self.counters["tx_dropped"] += 1
        self.tx_free.enqueue_many(done)
        if done and signal_needed(self.tx_free.flag):
            self.notify(self.config.tx.channel)
