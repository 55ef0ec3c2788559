"""Net rx virtualiser: demultiplexes received frames from the driver to clients by MAC.

sDDF's virt_rx, with its protocol unchanged: ``rx_return`` takes filled buffers from the
driver's rx active queue (io addresses), and gives each to the client whose MAC it names (as
an offset into the rx data region); ``rx_provide`` takes the buffers clients give back and
returns them on the driver's rx free queue. Both follow the plain signalling protocol: process,
request a signal, re-check, and notify a neighbour only when it asked. A pass moves at most a
batch before it notifies and goes on.

Broadcast and multicast frames go to every client with a reference count; a buffer returns
to the driver once every client holding it has given it back. Frames for no client go
straight back to the driver. A client whose queue is full loses its copy (counted): virt_rx
never waits on a client. A client that returns a buffer it does not hold, or breaks its
queue's protocol, is refused and counted (its queue ends report to ``refuse``); other
clients are not disturbed.
"""
from __future__ import annotations

from collections import Counter

from sddf.component import Component
from sddf.net.config import NetClientPort, NetVirtRxConfig
from sddf.net.queue import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import drain


class _Client:
    def __init__(self, virt: "NetVirtRx", port: NetClientPort) -> None:
        self.name = port.name
        self.mac = port.mac
        self.channel = port.queues.channel
        self.free, self.active = producing_side(f"{port.name}.rx", *port.queues.views(virt.regions),
                                                virt.client_space, virt.refuse)
        self.held: set[int] = set()  # offsets of the buffers this client holds
        self.outbox: list[tuple] = []


class NetVirtRx(Component):
    kind = "net.virt_rx"
    Config = NetVirtRxConfig

    def init(self) -> None:
        cfg = self.config
        data = self.regions[cfg.data.map]
        self.driver_space = BufferSpace([(cfg.data.io_addr, data)])  # how the driver names buffers
        self.client_space = BufferSpace([(0, data)])  # how clients name them (offsets)
        self.driver_free, self.driver_active = consuming_side("driver.rx",
                                                             *cfg.driver.views(self.regions),
                                                             self.driver_space, self.refuse)
        self.clients = [_Client(self, port) for port in cfg.clients]
        self.by_mac = {c.mac: c for c in self.clients}
        self.refs: Counter[int] = Counter()  # offset -> clients holding it
        self.to_driver: list[tuple] = []
        # a fresh system: hand the driver its buffers; after a restart they are already out
        self.adopting = self.driver_free.index != 0 or self.driver_active.index != 0
        if not self.adopting:
            self.to_driver = [(io, 0, 0) for io in self.driver_space.addresses()[:cfg.driver.capacity]]
            self.counters["buffers"] = len(self.to_driver)
        self.notified(cfg.driver.channel)

    def notified(self, ch: int) -> None:
        self.rx_return()
        self.rx_provide()

    # ---- driver → clients -------------------------------------------------------------------
    def rx_return(self) -> None:
        """Demultiplex every frame the driver received, a batch at a time."""
        drain(self.driver_active, self._demux, self.config.batch)

    def _demux(self, frames: list[tuple]) -> None:
        slot, rebase, client_space = self.driver_space.slot, self.driver_space.rebase, self.client_space
        for io, length, _ in frames:
            if not length:
                self.counters["empty_from_driver"] += 1
                self.to_driver.append((io, 0, 0))
                continue
            dst = bytes(slot(io)[:6])
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
            off = rebase(io, client_space)
            self.refs[off] += len(targets)
            for c in targets:
                c.outbox.append((off, length, 0))
                c.held.add(off)
        for c in self.clients:
            self._deliver(c)
        self._give_to_driver()

    def _deliver(self, c: _Client) -> None:
        """Publish what ``c`` gets; drop (and count) what its full queue cannot take."""
        if not c.outbox:
            return
        sent = c.active.enqueue_many(c.outbox)  # 0 if the client broke its queue (counted)
        for off, _, _ in c.outbox[sent:]:
            self.counters[f"{c.name}.dropped"] += 1
            c.held.discard(off)
            self._release(off)
        c.outbox.clear()
        if sent and c.active.signal_needed():
            self.notify(c.channel)

    # ---- clients → driver -------------------------------------------------------------------
    def rx_provide(self) -> None:
        """Take back what every client returned and give it to the driver."""
        for c in self.clients:
            drain(c.free, lambda descs, c=c: self._returned(c, descs), self.config.batch)
        self._give_to_driver()

    def _returned(self, client: _Client, descs: list[tuple]) -> None:
        held = client.held
        for off, _len, _oid in descs:
            if off in held:
                held.discard(off)
            elif not self.adopting:  # after a restart we do not know who held what
                self.counters[f"{client.name}.bad_return"] += 1
                continue
            self._release(off)
        self._give_to_driver()

    def _release(self, off: int) -> None:
        left = self.refs[off] - 1
        if left > 0:
            self.refs[off] = left
        else:
            self.refs.pop(off, None)
            self.to_driver.append((self.client_space.rebase(off, self.driver_space), 0, 0))

    def _give_to_driver(self) -> None:
        self.counters["held_by_clients"] = len(self.refs)
        if not self.to_driver:
            return
        sent = self.driver_free.enqueue_many(self.to_driver)
        del self.to_driver[:sent]
        if sent and self.driver_free.signal_needed():
            self.notify(self.config.driver.channel)
