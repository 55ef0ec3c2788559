"""Net copier: copies received frames from the driver-shared rx region into a client's own.

It sits between virt_rx (to which it looks like a client) and one client (to which it looks
like virt_rx), so an untrusted client never maps the region where other clients' frames land.
Descriptors from either side are checked; bad ones are refused and counted.
"""
from __future__ import annotations

from sddf.component import Component
from sddf.config import NetCopierConfig
from sddf.queue.net import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import QueueProtocolError
from sddf.signal import request_and_recheck, signal_needed

BATCH = 64


class NetCopier(Component):
    kind = "net.copier"
    Config = NetCopierConfig

    def init(self) -> None:
        cfg = self.config
        self.virt_free, self.virt_active = consuming_side(f"{self.name}<-virt", *cfg.virt.views(self.regions))
        self.client_free, self.client_active = producing_side(f"{self.name}->client",
                                                              *cfg.client.views(self.regions))
        self.src = BufferSpace([(0, self.regions[cfg.virt_data.map])])
        self.dst = BufferSpace([(0, self.regions[cfg.client_data.map])])
        self.spare: list[tuple] = []  # client buffers taken but not yet filled
        self.pump()

    def notified(self, ch: int) -> None:
        try:
            self.pump()
        except QueueProtocolError as exc:
            self.refuse("protocol_errors", exc)

    def pump(self) -> None:
        """Copy while there are both frames from virt_rx and empty buffers from the client."""
        while True:
            if not self.spare:
                self.spare = [d for d in self.client_free.dequeue_many(BATCH) if self._client_buffer(d)]
                if not self.spare:
                    if request_and_recheck(self.client_free.flag, lambda: not self.client_free.empty()):
                        continue
                    return
            frames = self.virt_active.dequeue_many(len(self.spare))
            if not frames:
                if request_and_recheck(self.virt_active.flag, lambda: not self.virt_active.empty()):
                    continue
                return
            delivered, returned = [], []
            for off, length, oid in frames:
                src = self.src.slot(off)
                if src is None:
                    self.counters["bad_from_virt"] += 1
                    continue
                returned.append((off, 0, 0))
                if not 0 < length <= len(src):
                    self.counters["bad_length_from_virt"] += 1
                    continue
                dst_off = self.spare.pop()[0]
                self.dst.slot(dst_off)[:length] = src[:length]
                delivered.append((dst_off, length, oid))
            sent = self.client_active.enqueue_many(delivered)
            if sent < len(delivered):  # only a client that returned a buffer twice can fill its queue
                self.counters["dropped_client_queue_full"] += len(delivered) - sent
            self.virt_free.enqueue_many(returned)
            if delivered and signal_needed(self.client_active.flag):
                self.notify(self.config.client.channel)
            if returned and signal_needed(self.virt_free.flag):
                self.notify(self.config.virt.channel)

    def _client_buffer(self, desc: tuple) -> bool:
        if self.dst.slot(desc[0]) is None:
            self.counters["bad_from_client"] += 1
            return False
        return True
