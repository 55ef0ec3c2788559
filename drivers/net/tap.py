"""Net driver for a host TAP device: only converts between the TAP fd and sDDF's net queues.

In sDDF's words: ``rx_provide`` looks at empty buffers on the rx free queue (our "hardware
ring"), ``rx_return`` reads one frame from the TAP into each, releases the used ones from rx
free and publishes them on rx active, ``tx_provide`` writes each frame on tx active to the TAP,
and ``tx_return`` gives the sent buffers back on tx free. Each pass moves at most a batch, then
notifies whoever asked and goes on. Its queue ends are tracked by its ledger, so each batch
leaves one queue and enters the other in one commit: a driver killed at any point holds no
buffer (a tx batch not yet committed is sent again by its restart). Buffers are named by io address; the queue ends refuse
(and count) any descriptor that is not a whole buffer of a granted region.
"""
from __future__ import annotations

import os

from sddf.component import Component
from sddf.net.config import NetDriverConfig
from sddf.net.queue import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import drain


class TapDriver(Component):
    kind = "net.driver"
    Config = NetDriverConfig

    def init(self) -> None:
        cfg = self.config
        self.tap = self.device(cfg.irq)
        self.rx_space = BufferSpace([(cfg.rx_data.io_addr, self.regions[cfg.rx_data.map])])
        self.tx_space = BufferSpace([(d.io_addr, self.regions[d.map]) for d in cfg.tx_data])
        self.rx_free, self.rx_active = producing_side("rx", *cfg.rx.views(self.regions),
                                                      self.rx_space, self.refuse)
        self.tx_free, self.tx_active = consuming_side("tx", *cfg.tx.views(self.regions),
                                                      self.tx_space, self.refuse)
        self.ledger.track(self.rx_free, self.rx_active, self.tx_free, self.tx_active)
        self.spare: list[int] = []  # rx buffers ours but not yet filled (only after a refused descriptor)
        self.unused: list[int] = []  # peeked at the head of rx free, not yet filled (last first)
        self.tap_readable = True    # until a read finds the TAP empty (then we wait for its irq)
        self.overflow = bytearray(1)  # read past a buffer's end: only a frame too long reaches it
        self.wake_peers(cfg.rx.channel, cfg.tx.channel)
        self.rx_return()
        self.tx_provide()

    def notified(self, ch: int) -> None:
        cfg = self.config
        if ch == cfg.irq:
            self.tap_readable = True
            self.rx_return()
        elif ch == cfg.rx.channel:
            self.rx_return()  # virt_rx gave back buffers we asked for
        elif ch == cfg.tx.channel:
            self.tx_provide()

    # ---- rx -------------------------------------------------------------------------------
    def rx_provide(self) -> list[int]:
        """Empty buffers to read frames into: up to a batch looked at on rx free but left there
        until used (so a driver killed while idle loses none; what a wake leaves unused stays at
        the head of rx free for the next, which need not look again), or the spares a refusal
        left us with. Empty if there are none (then virt_rx has been asked to notify us of returns)."""
        while not (self.spare or self.unused):
            peeked = [io for io, _, _ in self.rx_free.peek_many(self.config.batch)]
            if self.rx_free.peek_released:
                self.spare = peeked[::-1]  # ours now (rare: a peek that met a refused descriptor)
            elif peeked:
                self.unused = peeked[::-1]
            elif not self.rx_free.request_and_recheck():
                break
        return self.spare or self.unused

    def rx_return(self) -> None:
        """Read frames while the TAP has them and buffers last; publish each batch and notify."""
        while self.tap_readable:
            buffers = self.rx_provide()
            if not buffers:
                break
            filled = self._read_frames(buffers)
            if buffers is not self.spare:
                self.rx_free.release(len(filled))  # committed with their publication on rx active
            if filled:
                self.rx_active.enqueue_many(filled)
                self.counters["rx_frames"] += len(filled)
                if self.rx_active.signal_needed():
                    self.notify(self.config.rx.channel)
        self.counters["rx_spare"] = len(self.spare)

    def _read_frames(self, buffers: list[int]) -> list[tuple]:
        """Read frames into ``buffers`` (taken from their end) until the TAP is empty (then ack
        its irq); return the filled descriptors."""
        filled = []
        slot, tap, overflow = self.rx_space.slot, self.tap, self.overflow
        while buffers:
            io = buffers[-1]
            buffer = slot(io)
            try:
                n = os.readv(tap, [buffer, overflow])
            except BlockingIOError:
                self.tap_readable = False
                self.irq_ack(self.config.irq)
                break
            if n > len(buffer):  # a frame longer than a buffer: dropped, the buffer kept for the next
                self.counters["rx_oversize"] += 1
                continue
            buffers.pop()
            filled.append((io, n, 0))
        return filled

    # ---- tx -------------------------------------------------------------------------------
    def tx_provide(self) -> None:
        """Write every frame virt_tx queued, a batch at a time, returning each buffer (a batch
        leaves tx active in the commit that puts its buffers on tx free)."""
        drain(self.tx_active, self.tx_return, self.config.batch)

    def tx_return(self, descs: list[tuple]) -> None:
        """Write a batch of frames to the TAP and give their buffers back on tx free."""
        slot, tap = self.tx_space.slot, self.tap
        sent = 0
        for io, length, _oid in descs:
            if not length:
                self.counters["tx_empty"] += 1
                continue
            try:
                os.write(tap, slot(io)[:length])
                sent += 1
            except OSError:
                self.counters["tx_dropped"] += 1
        self.counters["tx_frames"] += sent
        returned = self.tx_free.enqueue_many([(io, 0, oid) for io, _, oid in descs])
        if returned < len(descs):  # tx free holds every tx buffer: only a misbehaving virt_tx fills it
            self.counters["tx_free_full"] += len(descs) - returned
        if self.tx_free.signal_needed():
            self.notify(self.config.tx.channel)
