"""The plumbing every serial client with input shares: bytes in from virt_rx, dispatch of other channels.

Output needs nothing more than the base class: any PD granted a serial console
(``Sddf.Serial.add_client``) writes with :meth:`Component.console_write` (``write`` here) and its
:meth:`Component.log` lines go there (see :mod:`sddf.serial.output`). A subclass implements
:meth:`SerialClient.received` (the bytes typed at it) and, for other channels (a timer, say),
:meth:`SerialClient.other_notified`. sDDF's protocol on input: after taking it the client
notifies virt_rx only if virt_rx asked (it found the queue full).
"""
from __future__ import annotations

from sddf.component import Component, GrantError


class SerialClient(Component):
    """A component with a serial console that may also read what is typed at it."""

    write = Component.console_write

    def init(self) -> None:
        if self.serial is None:
            raise GrantError(f"PD {self.name!r} is a serial client with no serial grant "
                             "(add it with Sddf.Serial.add_client)")
        self.rx = self.serial.rx.consumer(f"{self.name}:serial_rx", self.regions) if self.serial.rx else None
        self.setup()
        self._take_input()

    def setup(self) -> None:
        """Set up the client's own state (called by ``init`` before its input is examined)."""

    def notified(self, ch: int) -> None:
        if self.serial is not None and self.serial.rx is not None and ch == self.serial.rx.channel:
            self._take_input()
        else:
            self.other_notified(ch)

    def received(self, data: bytes) -> None:
        """Bytes typed at this client (override)."""

    def other_notified(self, ch: int) -> None:
        raise NotImplementedError(f"PD {self.name!r}: no handler for channel {ch}")

    def _take_input(self) -> None:
        if self.rx is None:
            return
        data = self.rx.dequeue()
        if not data:
            return
        self.counters["rx_bytes"] += len(data)
        assert self.serial is not None and self.serial.rx is not None
        if self.rx.signal_needed():
            self.notify(self.serial.rx.channel)
        self.received(data)
