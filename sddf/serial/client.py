"""The plumbing every serial client shares: bytes out to virt_tx, bytes in from virt_rx.

A subclass implements :meth:`SerialClient.received` (the bytes typed at it) and, for other
channels (a timer, say), :meth:`SerialClient.other_notified`; it calls :meth:`SerialClient.write`
with what to print. sDDF's protocol: after publishing output the client always notifies virt_tx;
when its queue is full it asks virt_tx for a signal (``producer_signalled``) and keeps the rest
in a bounded backlog until that signal; after taking input it notifies virt_rx only if virt_rx
asked. Output beyond ``BACKLOG_MAX`` bytes is dropped and counted (``tx_dropped``).
"""
from __future__ import annotations

from sddf.component import Component

BACKLOG_MAX = 1 << 20


class SerialClient(Component):
    """A component with a serial console (its config's ``serial`` entry, from ``Sddf.Serial``)."""

    def init(self) -> None:
        cfg = self.config.serial
        self.tx = cfg.tx.producer(f"{self.name}:serial_tx", self.regions)
        self.rx = cfg.rx.consumer(f"{self.name}:serial_rx", self.regions) if cfg.rx is not None else None
        self.backlog = bytearray()
        self.setup()
        self._flush()
        self._take_input()

    def setup(self) -> None:
        """Set up the client's own state (called by ``init`` before the queues are examined)."""

    def notified(self, ch: int) -> None:
        cfg = self.config.serial
        if ch == cfg.tx.channel:
            self._flush()
        elif cfg.rx is not None and ch == cfg.rx.channel:
            self._take_input()
        else:
            self.other_notified(ch)
        self._flush()

    def received(self, data: bytes) -> None:
        """Bytes typed at this client (override)."""

    def other_notified(self, ch: int) -> None:
        raise NotImplementedError(f"PD {self.name!r}: no handler for channel {ch}")

    def write(self, data: bytes | str) -> None:
        """Print ``data`` (on the queue, or in the backlog until virt_tx makes room)."""
        if isinstance(data, str):
            data = data.encode()
        room = BACKLOG_MAX - len(self.backlog)
        if len(data) > room:
            self.counters["tx_dropped"] += len(data) - room
            data = data[:room]
        self.backlog += data
        self._flush()

    def _flush(self) -> None:
        """Move the backlog onto the tx queue; notify virt_tx of what was published; ask for a
        signal while some is left."""
        channel = self.config.serial.tx.channel
        while self.backlog:
            sent = self.tx.enqueue(self.backlog)
            if sent:
                del self.backlog[:sent]
                self.counters["tx_bytes"] += sent
                self.deferred_notify(channel)
            if self.backlog and not self.tx.request_and_recheck():
                return  # full: virt_tx signals when it made room

    def _take_input(self) -> None:
        if self.rx is None:
            return
        data = self.rx.dequeue()
        if not data:
            return
        self.counters["rx_bytes"] += len(data)
        if self.rx.signal_needed():
            self.notify(self.config.serial.rx.channel)
        self.received(data)
