"""Net rx virtualiser: demultiplexes received frames from the driver to clients by MAC.

sDDF's virt_rx, with its protocol unchanged: ``rx_return`` takes filled buffers from the
driver's rx active queue (io addresses), and gives each to the client whose MAC it names (as
an offset into the rx data region); ``rx_provide`` takes the buffers clients give back and
returns them on the driver's rx free queue. Both follow the plain signalling protocol: process,
request a signal, re-check, and notify a neighbour only when it asked. A pass moves at most a
batch before it notifies and goes on.

Broadcast and multicast frames go to every client; a buffer returns to the driver once every
client holding it has given it back. Frames for no client go straight back to the driver. A
client whose queue is full loses its copy (counted): virt_rx never waits on a client. A client
that returns a buffer it does not hold, or breaks its queue's protocol, is refused and counted
(its queue ends report to ``refuse``); other clients are not disturbed.

Who holds each buffer is kept in virt_rx's ledger (one word per buffer: a bit per client holding
it, ``PENDING`` while it waits for room on the driver's queue), committed with the queue moves
that change it, so a virt_rx killed at any point and restarted knows exactly who holds what.
"""
from __future__ import annotations


from sddf.component import Component
from sddf.net.config import NetClientPort, NetVirtRxConfig
from sddf.net.words import RX_PENDING as PENDING
from sddf.net.queue import BufferSpace, consuming_side, producing_side
from sddf.queue.ring import drain


class _Client:
    def __init__(self, virt: "NetVirtRx", index: int, port: NetClientPort) -> None:
        self.name = port.name
        self.mac = port.mac
        self.bit = 1 << index  # its bit in a buffer's word
        self.channel = port.queues.channel
        self.free, self.active = producing_side(f"{port.name}.rx", *port.queues.views(virt.regions),
                                                virt.client_space, virt.refuse)
        self.outbox: list[tuple] = []


class NetVirtRx(Component):
    kind = "net.virt_rx"
    Config = NetVirtRxConfig

    def init(self) -> None:
        cfg = self.config
        data = self.regions[cfg.data.map]
        self.driver_space = BufferSpace([(cfg.data.io_addr, data)])  # how the driver names buffers
        self.client_space = BufferSpace([(0, data)])  # how clients name them (offsets)
        self.buffer_size = self.client_space.buffer_size
        self.driver_free, self.driver_active = consuming_side("driver.rx",
                                                             *cfg.driver.views(self.regions),
                                                             self.driver_space, self.refuse)
        self.clients = [_Client(self, i, port) for i, port in enumerate(cfg.clients)]
        self.by_mac = {c.mac: c for c in self.clients}
        self.everyone = sum(c.bit for c in self.clients)
        self.ledger.track(self.driver_free, self.driver_active, *(e for c in self.clients for e in (c.free, c.active)))
        addresses = self.driver_space.addresses()  # buffer number -> its io address
        self.ledger.require(len(addresses), "one per rx buffer")
        self.holders = self.ledger.words  # buffer number -> its word
        self.pending = {i for i, word in enumerate(self.holders) if word & PENDING}
        if self.ledger.fresh:  # hand the driver its buffers; after a restart they are where the words say
            self.to_driver = [(io, 0, 0) for io in addresses[:cfg.driver.capacity]]
            self.counters["buffers"] = len(self.to_driver)
        else:
            self.to_driver = [(addresses[i], 0, 0) for i in sorted(self.pending)]
        self.counters["held_by_clients"] = sum(1 for word in self.holders if word and not word & PENDING)
        self.wake_peers(cfg.driver.channel, *(c.channel for c in self.clients))
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
        size, hold = self.buffer_size, self.ledger.set
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
            if self.holders[off // size]:  # a buffer the driver was not given
                self.counters["bad_from_driver"] += 1
                continue
            hold(off // size, self.everyone if targets is self.clients else targets[0].bit)
            self.counters["held_by_clients"] += 1
            for c in targets:
                c.outbox.append((off, length, 0))
        # every buffer of the batch is on a queue (or in a word) before the first signal commits
        delivered = [c for c in self.clients if self._deliver(c)]
        self._give_to_driver()
        for c in delivered:
            if c.active.signal_needed():
                self.notify(c.channel)

    def _deliver(self, c: _Client) -> int:
        """Queue what ``c`` gets; drop (and count) what its full queue cannot take; return how
        many were queued."""
        if not c.outbox:
            return 0
        sent = c.active.enqueue_many(c.outbox)  # 0 if the client broke its queue (counted)
        for off, _, _ in c.outbox[sent:]:
            self.counters[f"{c.name}.dropped"] += 1
            self._release(c, off)
        c.outbox.clear()
        return sent

    # ---- clients → driver -------------------------------------------------------------------
    def rx_provide(self) -> None:
        """Take back what every client returned and give it to the driver."""
        for c in self.clients:
            drain(c.free, lambda descs, c=c: self._returned(c, descs), self.config.batch)
        self._give_to_driver()

    def _returned(self, client: _Client, descs: list[tuple]) -> None:
        holders, size = self.holders, self.buffer_size
        for off, _len, _oid in descs:
            if holders[off // size] & client.bit:
                self._release(client, off)
            else:
                self.counters[f"{client.name}.bad_return"] += 1
        self._give_to_driver()

    def _release(self, client: _Client, off: int) -> None:
        """``client`` no longer holds the buffer at ``off``: the last holder's return frees it."""
        i = off // self.buffer_size
        left = self.holders[i] & ~client.bit
        self.ledger.set(i, left)
        if not left:
            self.counters["held_by_clients"] -= 1
            self.to_driver.append((self.client_space.rebase(off, self.driver_space), 0, 0))

    def _give_to_driver(self) -> None:
        if not self.to_driver:
            return
        sent = self.driver_free.enqueue_many(self.to_driver)
        if self.pending or sent < len(self.to_driver):
            self._mark_pending(sent)
        del self.to_driver[:sent]
        if sent and self.driver_free.signal_needed():
            self.notify(self.config.driver.channel)

    def _mark_pending(self, sent: int) -> None:
        """Make the words say PENDING for exactly the buffers still waiting after ``sent`` went to
        the driver (rare: the driver's free queue holds every buffer, unless it broke its queue)."""
        base, size = self.driver_space.bases[0], self.buffer_size
        waiting = {(io - base) // size for io, _, _ in self.to_driver[sent:]}
        for i in self.pending - waiting:
            self.ledger.set(i, 0)
        for i in waiting - self.pending:
            self.ledger.set(i, PENDING)
        self.pending = waiting
