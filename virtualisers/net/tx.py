"""Net tx virtualiser: multiplexes clients' transmit queues onto the driver's, fairly.

sDDF's virt_tx: ``tx_provide`` moves frames from each client's tx active queue (offsets into
the client's tx data region) to the driver's (io addresses); ``tx_return`` gives the buffers the
driver has sent back to the client that owns them. Both follow the plain signalling protocol.

Beyond sDDF (whose driver queue is as large as all clients' together), the driver's queue may
fill: clients are then served round-robin, at most ``batch`` frames each per turn, so one
flooding client cannot starve another, and a client with frames left waits for its next turn
(virt_tx always asks the driver to signal returned buffers, which is when room appears). Only
clients that may have frames are visited — one that notified us, or one not yet drained — so
a pass costs the same however many clients are idle; a drained client has requested a signal.

A buffer a client does not hold (at the driver, or not yet back on its free queue), a bad
length, or a protocol violation is refused and counted for that client only. Where each client
buffer is — with the client, at the driver, or ``RETURNING`` (waiting for room on the client's
free queue) — is one word per buffer in virt_tx's ledger, committed with the queue moves that
change it, so a virt_tx killed at any point and restarted knows it exactly.
"""
from __future__ import annotations

from collections import deque

from sddf.component import Component
from sddf.net.config import NetClientPort, NetVirtTxConfig
from sddf.net.words import TX_AT_DRIVER as AT_DRIVER, TX_RETURNING as RETURNING, TX_WITH_CLIENT as WITH_CLIENT
from sddf.net.queue import BufferSpace, consuming_side, fill_free, producing_side
from sddf.queue.ring import drain


class _Client:
    def __init__(self, virt: "NetVirtTx", index: int, first: int, port: NetClientPort) -> None:
        assert port.data is not None, f"virt_tx needs client {port.name}'s tx data region"
        self.name = port.name
        self.index = index  # its span in virt_tx's driver space
        self.first = first  # the word of its first buffer
        self.channel = port.queues.channel
        self.space = BufferSpace([(0, port.data.size)])  # how the client names its buffers
        self.free, self.active = consuming_side(f"{port.name}.tx", *port.queues.views(virt.regions),
                                                self.space, virt.refuse)
        self.returns = [(off, 0, 0) for off in self.space.addresses()
                        if virt.ledger.words[first + off // self.space.buffer_size] == RETURNING]


class NetVirtTx(Component):
    kind = "net.virt_tx"
    Config = NetVirtTxConfig

    def init(self) -> None:
        cfg = self.config
        self.driver_space = BufferSpace([(p.data.io_addr, p.data.size) for p in cfg.clients])
        self.driver_free, self.driver_active = producing_side("driver.tx",
                                                             *cfg.driver.views(self.regions),
                                                             self.driver_space, self.refuse)
        self.buffer_size = self.driver_space.buffer_size
        self.ledger.require(len(self.driver_space.addresses()), "one per client tx buffer")
        firsts = [sum(size // self.buffer_size for size in self.driver_space.sizes[:i]) for i in range(len(cfg.clients))]
        self.clients = [_Client(self, i, first, port) for i, (first, port) in enumerate(zip(firsts, cfg.clients))]
        self.by_channel = {c.channel: c for c in self.clients}
        self.busy: deque[_Client] = deque(self.clients)  # may have frames to send, in serving order
        self.ledger.track(self.driver_free, self.driver_active, *(e for c in self.clients for e in (c.free, c.active)))
        if self.ledger.fresh:  # each client's buffers start on its free queue
            for c in self.clients:
                fill_free(c.free, c.space.addresses()[:c.free.capacity])
                if c.free.signal_needed():  # it tried to send before we started (found by spin)
                    self.notify(c.channel)
        self.wake_peers(cfg.driver.channel, *(c.channel for c in self.clients))
        self.notified(cfg.driver.channel)

    def notified(self, ch: int) -> None:
        c = self.by_channel.get(ch)
        if c is not None and c not in self.busy:
            self.busy.append(c)
        self.tx_return()
        self.tx_provide()

    # ---- clients → driver -------------------------------------------------------------------
    def tx_provide(self) -> None:
        """Round-robin over the busy clients: each moves up to ``batch`` frames per turn while the
        driver has room; the driver is notified after each turn that moved frames. A client that
        runs dry leaves the busy list with a signal requested."""
        batch = self.config.batch
        while self.busy:
            room = self.driver_active.free_slots()
            if not room:
                return  # the driver's returns (we always ask for them) wake us to go on
            c = self.busy.popleft()
            want = min(batch, room)
            descs = c.active.dequeue_many(want)  # nothing from a client that broke its queue (counted)
            drained = c.active.last_taken < want and not c.active.request_and_recheck()
            out = self._translate(c, descs)
            if out:
                self.driver_active.enqueue_many(out)
                if self.driver_active.signal_needed():
                    self.notify(self.config.driver.channel)
            if not drained:
                self.busy.append(c)  # more to come: its next turn is after the others'

    def _translate(self, c: _Client, descs: list[tuple]) -> list[tuple]:
        out = []
        rebase, driver_space, span = c.space.rebase, self.driver_space, c.index
        words, size, first = self.ledger.words, self.buffer_size, c.first
        for off, length, oid in descs:
            if words[first + off // size] != WITH_CLIENT:
                self.counters[f"{c.name}.not_owned"] += 1
            elif not length:
                self.counters[f"{c.name}.bad_length"] += 1
                self._give_back(c, off, oid)
            else:
                self.ledger.set(first + off // size, AT_DRIVER)
                out.append((rebase(off, driver_space, 0, span), length, oid))
        return out

    # ---- driver → clients -------------------------------------------------------------------
    def tx_return(self) -> None:
        """Give every buffer the driver has sent back to its client, a batch at a time (and any
        that waited for room on a client's free queue)."""
        drain(self.driver_free, self._completed, self.config.batch)
        self._return_all()

    def _return_all(self) -> None:
        for c in self.clients:
            self._return_to(c)

    def _completed(self, descs: list[tuple]) -> None:
        span_of, clients, words, size = self.driver_space.span_of, self.clients, self.ledger.words, self.buffer_size
        for io, _len, oid in descs:
            c = clients[span_of(io)]
            off = self.driver_space.rebase(io, c.space, c.index, 0)
            if words[c.first + off // size] != AT_DRIVER:
                self.counters["bad_from_driver"] += 1
                continue
            self._give_back(c, off, oid)
        self._return_all()

    def _give_back(self, c: _Client, off: int, oid: int) -> None:
        self.ledger.set(c.first + off // self.buffer_size, RETURNING)
        c.returns.append((off, 0, oid))

    def _return_to(self, c: _Client) -> None:
        if not c.returns:
            return
        sent = c.free.enqueue_many(c.returns)
        for off, _, _ in c.returns[:sent]:
            self.ledger.set(c.first + off // self.buffer_size, WITH_CLIENT)
        del c.returns[:sent]
        if sent and c.free.signal_needed():
            self.notify(c.channel)
