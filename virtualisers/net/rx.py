"""Net rx virtualiser: demultiplexes received frames from the driver to clients by MAC.

Buffers come from the driver as io addresses and go to clients as offsets into the rx data
region. Returned buffers are collected on every pass; clients are asked to notify us of
returns only while the driver runs short of buffers, which saves a wake-up per packet. Broadcast and multicast frames go to every client with a reference count; a buffer
returns to the driver once every client holding it has given it back. Frames for no client
go straight back to the driver. A client that returns a buffer it does not hold, or breaks
its queue's protocol, is refused and counted; other clients are not disturbed.
"""
from __future__ import annotations

from collections import Counter

from sddf.component import Component
from sddf.config import NetClientPort, NetVirtRxConfig
from sddf.queue.net import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import QueueProtocolError
from sddf.signal import drain, request_and_recheck, signal_needed

BATCH = 64


class _Client:
    def __init__(self, virt: "NetVirtRx", port: NetClientPort) -> None:
        self.name = port.name
        self.mac = port.mac
        self.channel = port.queues.channel
        self.free, self.active = producing_side(f"{virt.name}->{port.name}.rx", *port.queues.views(virt.regions))
        self.held: set[int] = set()
        self.outbox: list[tuple] = []


class NetVirtRx(Component):
    kind = "net.virt_rx"
    Config = NetVirtRxConfig

    def init(self) -> None:
        cfg = self.config
        self.driver_free, self.driver_active = consuming_side(f"{self.name}<-driver.rx",
                                                             *cfg.driver.views(self.regions))
        self.base = cfg.data.io_addr
        self.data = BufferSpace([(0, self.regions[cfg.data.map])])
        self.clients = [_Client(self, port) for port in cfg.clients]
        self.by_mac = {c.mac: c for c in self.clients}
        self.by_channel = {c.channel: c for c in self.clients}
        self.refs: Counter[int] = Counter()
        self.low_water = min(cfg.driver.capacity, 4 * BATCH)
        self.to_driver: list[tuple] = []
        # a fresh system: hand the driver every buffer; after a restart they are already out
        self.adopting = self.driver_free.index != 0 or self.driver_active.index != 0
        if not self.adopting:
            buffers = [(self.base + off, 0, 0) for off in self.data.addresses()]
            self.to_driver = buffers[:cfg.driver.capacity]
            self.counters["buffers"] = len(self.to_driver)
        self.notified(cfg.driver.channel)

    def notified(self, ch: int) -> None:
        if ch == self.config.driver.channel:
            drain(self.driver_active, self._demux, BATCH)
        while True:
            self._collect_returns()
            self._flush()
            if not self._short_of_buffers():
                for c in self.clients:
                    c.free.flag.cancel()
                return
            if not any([self._ask_for_returns(c) for c in self.clients]):
                return

    def _short_of_buffers(self) -> bool:
        """Whether the driver could run dry before frames wake us again (it takes at most
        two batches between our passes)."""
        return self.driver_free.length() + len(self.to_driver) < self.low_water

    def _ask_for_returns(self, c: _Client) -> bool:
        """Ask ``c`` to notify us when it returns buffers; True if some came back meanwhile."""
        try:
            return request_and_recheck(c.free.flag, lambda: not c.free.empty())
        except QueueProtocolError as exc:
            self.refuse(f"{c.name}.protocol_errors", exc)
            return False

    def _demux(self, frames: list[tuple]) -> None:
        for io, length, _ in frames:
            off = io - self.base
            slot = self.data.slot(off)
            if slot is None or not 0 < length <= len(slot):
                self.counters["bad_from_driver"] += 1
                if slot is not None:
                    self.to_driver.append((io, 0, 0))
                continue
            dst = bytes(slot[:6])
            if dst[0] & 1:  # broadcast or multicast: every client gets it
                targets = self.clients
                self.counters["broadcast"] += 1
            else:
                target = self.by_mac.get(dst)
                targets = [target] if target is not None else []
            if not targets:
                self.counters["no_client"] += 1
                self.to_driver.append((io, 0, 0))
                continue
            self.refs[off] += len(targets)
            for c in targets:
                c.outbox.append((off, length, 0))
                c.held.add(off)

    def _collect_returns(self) -> None:
        for client in self.clients:
            try:
                while True:
                    descs = client.free.dequeue_many(BATCH)
                    self._returned(client, descs)
                    if len(descs) < BATCH:
                        break
            except QueueProtocolError as exc:
                self.refuse(f"{client.name}.protocol_errors", exc)

    def _returned(self, client: _Client, descs: list[tuple]) -> None:
        for off, _len, _oid in descs:
            if off not in client.held and not (self.adopting and self.data.slot(off) is not None):
                self.counters[f"{client.name}.bad_return"] += 1
                continue
            client.held.discard(off)
            self._release(off)

    def _release(self, off: int) -> None:
        left = self.refs[off] - 1
        if left > 0:
            self.refs[off] = left
        else:
            self.refs.pop(off, None)
            self.to_driver.append((self.base + off, 0, 0))

    def _flush(self) -> None:
        """Publish what each client gets and what goes back to the driver; notify who asked."""
        self.counters["held_by_clients"] = len(self.refs)
        for c in self.clients:
            if not c.outbox:
                continue
            try:
                sent = c.active.enqueue_many(c.outbox)
            except QueueProtocolError as exc:
                self.refuse(f"{c.name}.protocol_errors", exc)
                sent = 0
            for off, _, _ in c.outbox[sent:]:  # client queue full: drop its copy
                self.counters[f"{c.name}.dropped"] += 1
                c.held.discard(off)
                self._release(off)
            c.outbox.clear()
            if sent and signal_needed(c.active.flag):
                self.notify(c.channel)
        if self.to_driver:
            sent = self.driver_free.enqueue_many(self.to_driver)
            del self.to_driver[:sent]
            if sent and signal_needed(self.driver_free.flag):
                self.notify(self.config.driver.channel)
