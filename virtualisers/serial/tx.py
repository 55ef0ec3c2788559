"""Serial tx virtualiser: multiplexes the clients' output onto the driver's tx queue (sDDF's virt_tx).

At start it writes the begin string (when input is enabled) and a banner "'<name>' is client <n>"
per client. A client's pending output moves to the driver only as a whole batch — wrapped in the
client's colour and a reset when colour is on — and only if all of it fits; otherwise the client
joins a FIFO of waiting clients (once), virt_tx asks the driver for a signal, and when the driver
makes room the waiting clients are tried in arrival order (one that still does not fit keeps its
place). A batch never interleaves with another's. A batch is at most what the driver's queue can
hold with the colour codes, so a full client queue never waits for good. As sDDF's: a batch that
fits when its client notifies goes at once, ahead of waiting clients whose batches did not fit.

Producers always notify (virt_tx notifies the driver after publishing); as a consumer virt_tx
notifies a client only when the client asked (it found its queue full). A client or driver that
breaks its queue is refused and counted; the others go on. The FIFO is not kept across a restart:
``init`` re-derives it from the clients' non-empty queues (in client order).
"""
from __future__ import annotations

from sddf.component import Component
from sddf.serial.config import SerialClientPort, SerialVirtTxConfig
from sddf.serial.queue import SerialConsumer

#: sDDF's colours, reused in turn when there are more clients: red, green, yellow, blue, magenta, cyan
COLOURS = tuple(f"\x1b[{code}m".encode() for code in range(31, 37))
COLOUR_END = b"\x1b[0m"


class _TxClient:
    """One client as virt_tx sees it: its queue and the bytes that wrap each of its batches."""

    def __init__(self, virt: "SerialVirtTx", index: int, port: SerialClientPort, colour: bool) -> None:
        self.index = index
        self.name = port.name
        self.channel = port.queue.channel
        self.queue: SerialConsumer = port.queue.consumer(f"{port.name}:serial_tx", virt.regions)
        self.queue.on_refuse = virt.refuse
        self.start = COLOURS[index % len(COLOURS)] if colour else b""
        self.end = COLOUR_END if colour else b""

    def wrap(self, text: bytes) -> bytes:
        return self.start + text + self.end


class SerialVirtTx(Component):
    kind = "serial.virt_tx"
    Config = SerialVirtTxConfig

    def init(self) -> None:
        cfg: SerialVirtTxConfig = self.config
        self.driver = cfg.driver.producer(f"{self.name}:driver_tx", self.regions)
        self.driver.on_refuse = self.refuse
        self.clients = [_TxClient(self, i, port, cfg.enable_color) for i, port in enumerate(cfg.clients)]
        self.by_channel = {c.channel: c for c in self.clients}
        overhead = max((len(c.wrap(b"")) for c in self.clients), default=0)
        if self.driver.capacity <= overhead:
            raise ValueError(f"PD {self.name!r}: the driver's tx queue ({self.driver.capacity} bytes) "
                             f"cannot hold a client's colour codes ({overhead} bytes)")
        self.batch_max = self.driver.capacity - overhead
        #: clients whose next batch did not fit, in arrival order (a dict: each at most once)
        self.waiting: dict[_TxClient, None] = {}
        self.ledger.track(self.driver, *(c.queue for c in self.clients))
        if self.ledger.fresh:
            self._banner(cfg.begin_str)
        self.wake_peers(cfg.driver.channel, *self.by_channel)
        for c in self.clients:  # a dead predecessor may have consumed their notifications
            self._provide(c)

    def _banner(self, begin_str: str | None) -> None:
        """The begin string (input enabled) then "'<name>' is client <n>" for every client."""
        text = begin_str.encode() if begin_str is not None else b""
        text += b"".join(c.wrap(f"'{c.name}' is client {c.index}".encode()) + b"\r\n" for c in self.clients)
        sent = self.driver.enqueue(text)
        if sent < len(text):
            self.counters["banner_dropped"] += len(text) - sent
        if sent:
            self.deferred_notify(self.config.driver.channel)

    def notified(self, ch: int) -> None:
        if ch == self.config.driver.channel:
            self._serve_waiting()
            return
        c = self.by_channel.get(ch)
        if c is None:
            self.refuse("unknown_channel", f"a notification on channel {ch}, which is no client's")
        elif c not in self.waiting:  # a waiting client keeps its place: the driver's signal serves it
            self._provide(c)

    def _provide(self, c: _TxClient) -> None:
        """Move ``c``'s output; if its batch does not fit, it waits for the driver's room."""
        if not self._move(c):
            self.waiting[c] = None
            self._serve_waiting()

    def _serve_waiting(self) -> None:
        """Try the waiting clients in arrival order until none is left or the driver has been
        asked (request, fence, re-check) to signal when the smallest waiting batch fits."""
        while self.waiting:
            self.waiting = {c: None for c in self.waiting if not self._move(c)}
            if not self.waiting or not self.driver.request_room(min(map(self._need, self.waiting))):
                return

    def _need(self, c: _TxClient) -> int:
        """Driver queue bytes ``c``'s next batch takes (0 if it has nothing pending)."""
        pending = min(c.queue.length(), self.batch_max)
        return len(c.wrap(b"")) + pending if pending else 0

    def _move(self, c: _TxClient) -> bool:
        """Move ``c``'s pending output to the driver, batch by whole batch; False if a batch does
        not fit (it stays in ``c``'s queue), True once ``c``'s queue is empty."""
        while True:
            need = self._need(c)
            if not need:
                return True
            if need > self.driver.free_slots():
                return False
            data = c.queue.dequeue(need - len(c.wrap(b"")))
            if data:
                self._publish(c, c.wrap(data))
                self.counters[f"{c.name}.tx_bytes"] += len(data)
            if c.queue.signal_needed():
                self.deferred_notify(c.channel)

    def _publish(self, c: _TxClient, batch: bytes) -> None:
        sent = self.driver.enqueue(batch)
        if sent < len(batch):  # only a driver that broke its queue takes less than the room it showed
            self.counters[f"{c.name}.tx_lost"] += len(batch) - sent
        self.deferred_notify(self.config.driver.channel)
