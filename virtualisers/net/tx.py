"""Net tx virtualiser: multiplexes clients' transmit queues onto the driver's, fairly.

Clients name buffers by offset into their own tx data region; the driver gets io addresses.
Clients are served round-robin, at most ``batch`` frames each per turn, so one flooding
client cannot starve another. Only clients that may have frames are visited: one that
notified us, or one not yet drained; a drained client is asked to notify us, so a pass costs
the same however many clients are idle. Completed buffers are collected on every pass; the driver is
asked to notify completions only when a client runs short or the driver's queue is full. Completed buffers go back to the client that owns them. An
offset outside the client's region, a bad length, a buffer it does not hold (at the driver, or
not yet back on its free queue), or a queue protocol violation is refused and counted for that
client only; what virt_tx keeps per client is bounded by the client's buffer count.
"""
from __future__ import annotations

from collections import deque

from sddf.component import Component
from sddf.config import NetClientPort, NetVirtTxConfig
from sddf.queue.net import NET_BUFFER_SIZE, consuming_side, is_buffer_offset, producing_side
from sddf.queue.ring import QueueProtocolError
from sddf.signal import request_and_recheck, signal_needed


class _Client:
    def __init__(self, virt: "NetVirtTx", port: NetClientPort) -> None:
        assert port.data is not None, f"virt_tx needs client {port.name}'s tx data region"
        self.name = port.name
        self.channel = port.queues.channel
        self.io_addr, self.size = port.data.io_addr, port.data.size
        self.buffers = self.size // NET_BUFFER_SIZE
        self.free, self.active = consuming_side(f"{virt.name}<-{port.name}.tx", *port.queues.views(virt.regions))
        self.in_flight: set[int] = set()  # at the driver
        self.returns: list[tuple] = []  # waiting for room on the client's free queue
        self.returning: set[int] = set()  # their offsets: still ours, so the client cannot send them


class NetVirtTx(Component):
    kind = "net.virt_tx"
    Config = NetVirtTxConfig

    def init(self) -> None:
        cfg = self.config
        self.driver_free, self.driver_active = producing_side(f"{self.name}->driver.tx",
                                                             *cfg.driver.views(self.regions))
        self.clients = [_Client(self, port) for port in cfg.clients]
        self.by_channel = {c.channel: c for c in self.clients}
        self.busy: deque[_Client] = deque(self.clients)  # may have frames to send, in serving order
        self.adopting = self.driver_free.index != 0 or self.driver_active.index != 0
        self.notified(cfg.driver.channel)

    def notified(self, ch: int) -> None:
        c = self.by_channel.get(ch)
        if c is not None and c not in self.busy:
            self.busy.append(c)
        while True:
            self._completed(self.driver_free.dequeue_many())  # all there are
            self._multiplex()
            self._return_to_clients()
            if not self._completions_needed():
                self.driver_free.flag.cancel()
                return
            if not request_and_recheck(self.driver_free.flag, lambda: not self.driver_free.empty()):
                return

    def _completions_needed(self) -> bool:
        """Whether to have the driver notify us of sent frames: only when clients wait for room in
        its queue (the room it makes comes with its completions) or a client has half its buffers
        in flight (otherwise they are collected on our next pass)."""
        return bool(self.busy) or any(2 * len(c.in_flight) >= c.buffers for c in self.clients)

    def _owner(self, io: int) -> _Client | None:
        for c in self.clients:
            if c.io_addr <= io < c.io_addr + c.size:
                return c
        return None

    def _completed(self, descs: list[tuple]) -> None:
        for io, _len, oid in descs:
            c = self._owner(io)
            off = io - c.io_addr if c is not None else -1
            if c is None or off in c.returning or (off not in c.in_flight and not self.adopting):
                self.counters["bad_from_driver"] += 1
                continue
            c.in_flight.discard(off)
            self._give_back(c, off, oid)

    @staticmethod
    def _give_back(c: _Client, off: int, oid: int) -> None:
        c.returning.add(off)
        c.returns.append((off, 0, oid))

    def _multiplex(self) -> None:
        """Round-robin over the busy clients: each moves up to ``batch`` frames per turn while the
        driver has room. A client that runs dry leaves the busy list and is asked for a signal."""
        batch = self.config.batch
        room = self.driver_active.free_slots()
        moved = False
        while self.busy and room:
            c = self.busy.popleft()
            want = min(batch, room)
            try:
                descs = c.active.dequeue_many(want)
            except QueueProtocolError as exc:
                self.refuse(f"{c.name}.protocol_errors", exc)
                c.active.flag.request()  # looked at again when it next publishes
                continue
            out = self._translate(c, descs)
            if out:
                self.driver_active.enqueue_many(out)
                room -= len(out)
                moved = True
            if len(descs) == want or request_and_recheck(c.active.flag, lambda c=c: self._has_work(c)):
                self.busy.append(c)  # more to come: its next turn is after the others'
        if moved and signal_needed(self.driver_active.flag):
            self.notify(self.config.driver.channel)

    def _has_work(self, c: _Client) -> bool:
        try:
            return not c.active.empty()
        except QueueProtocolError as exc:
            self.refuse(f"{c.name}.protocol_errors", exc)
            return False

    def _translate(self, c: _Client, descs: list[tuple]) -> list[tuple]:
        out = []
        for off, length, oid in descs:
            if not is_buffer_offset(off, c.size, NET_BUFFER_SIZE):
                self.counters[f"{c.name}.bad_offset"] += 1
            elif off in c.in_flight or off in c.returning:
                self.counters[f"{c.name}.not_owned"] += 1
            elif not 0 < length <= NET_BUFFER_SIZE:
                self.counters[f"{c.name}.bad_length"] += 1
                self._give_back(c, off, oid)
            else:
                c.in_flight.add(off)
                out.append((c.io_addr + off, length, oid))
        return out

    def _return_to_clients(self) -> None:
        for c in self.clients:
            if not c.returns:
                continue
            try:
                sent = c.free.enqueue_many(c.returns)
            except QueueProtocolError as exc:
                self.refuse(f"{c.name}.protocol_errors", exc)
                continue
            for off, _, _ in c.returns[:sent]:
                c.returning.discard(off)
            del c.returns[:sent]
            if sent and signal_needed(c.free.flag):
                self.notify(c.channel)
