"""Net copier: copies received frames from the driver-shared rx region into a client's own.

It sits between virt_rx (to which it looks like a client) and one client (to which it looks
like virt_rx), so an untrusted client never maps the region where other clients' frames land.
sDDF's contract: the copier never waits on its client. ``rx_return`` takes every frame virt_rx
gives it; with a free client buffer it copies the frame there, otherwise it drops the frame
(counted: ``dropped_no_client_buffer``); either way the shared buffer goes straight back to
virt_rx. A slow, stopped or hostile client therefore never holds the shared pool. The queue
ends refuse (and count) descriptors that are not whole buffers of their region.
"""
from __future__ import annotations

from sddf.component import Component
from sddf.net.config import NetCopierConfig
from sddf.net.queue import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import drain


class NetCopier(Component):
    kind = "net.copier"
    Config = NetCopierConfig

    def init(self) -> None:
        cfg = self.config
        self.src = BufferSpace([(0, self.regions[cfg.virt_data.map])])
        self.dst = BufferSpace([(0, self.regions[cfg.client_data.map])])
        self.virt_free, self.virt_active = consuming_side("virt.rx", *cfg.virt.views(self.regions),
                                                          self.src, self.refuse)
        self.client_free, self.client_active = producing_side("client.rx",
                                                              *cfg.client.views(self.regions),
                                                              self.dst, self.refuse)
        # a frame leaves virt_rx's queue, its copy enters the client's and the shared buffer goes
        # back in one commit: a copier killed at any point holds no buffer of either pool
        self.ledger.track(self.virt_free, self.virt_active, self.client_free, self.client_active)
        self.wake_peers(cfg.virt.channel, cfg.client.channel)
        self.rx_return()

    def notified(self, ch: int) -> None:
        self.rx_return()

    def rx_return(self) -> None:
        """Copy (or drop) every frame virt_rx has given us, a batch at a time."""
        drain(self.virt_active, self._copy, self.config.batch)

    def _copy(self, frames: list[tuple]) -> None:
        wanted = sum(1 for _, length, _ in frames if length)
        spare = [off for off, _, _ in self.client_free.dequeue_many(wanted)]
        delivered = []
        src, dst = self.src.slot, self.dst.slot
        for off, length, oid in frames:
            if not length:
                self.counters["empty_from_virt"] += 1
            elif not spare:
                self.counters["dropped_no_client_buffer"] += 1
            else:
                dst_off = spare.pop()
                dst(dst_off)[:length] = src(off)[:length]
                delivered.append((dst_off, length, oid))
        sent = self.client_active.enqueue_many(delivered)
        if sent < len(delivered):  # only a client that returned a buffer twice can fill its queue
            self.counters["dropped_client_queue_full"] += len(delivered) - sent
        self.counters["frames"] += sent
        self.virt_free.enqueue_many([(off, 0, 0) for off, _, _ in frames])
        if sent and self.client_active.signal_needed():
            self.notify(self.config.client.channel)
        if self.virt_free.signal_needed():
            self.notify(self.config.virt.channel)
