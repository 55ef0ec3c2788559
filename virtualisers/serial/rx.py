"""Serial rx virtualiser: passes what is typed to the current client (sDDF's virt_rx).

Input goes to one client at a time (client 0 at start). Typing the switch character (Ctrl-\\ by
default), up to 4 digits and the terminator (Enter) selects that client; the switch character
twice passes it through to the current client. Anything else after the switch character, a fifth
digit, or a client number out of range is logged (once per kind), counted and ignored, and input
goes on as normal. A character for a client whose queue is full is dropped and counted.

Producers always notify: virt_rx notifies a client after publishing to it. As the driver's
consumer it notifies the driver only when the driver asked (it found its queue full). Which
client is current is a word of its ledger, committed with the input taken: a restarted virt_rx
goes on with the same client.
"""
from __future__ import annotations

from enum import Enum

from sddf.component import Component
from sddf.serial.config import SerialVirtRxConfig
from sddf.serial.queue import SerialProducer

MAX_DIGITS = 4
CURRENT_WORD = 0  # its ledger word: the current client
#: bytes taken from the driver per pass (then clients and the driver are notified)
PASS_BYTES = 4096


class Mode(Enum):
    NORMAL = "normal"
    SWITCHED = "switch character seen"
    NUMBER = "reading a client number"


class SerialVirtRx(Component):
    kind = "serial.virt_rx"
    Config = SerialVirtRxConfig

    def init(self) -> None:
        cfg: SerialVirtRxConfig = self.config
        self.driver = cfg.driver.consumer(f"{self.name}:driver_rx", self.regions)
        self.driver.on_refuse = self.refuse
        self.clients: list[SerialProducer] = []
        for port in cfg.clients:
            queue = port.queue.producer(f"{port.name}:serial_rx", self.regions)
            queue.on_refuse = self.refuse
            self.clients.append(queue)
        self.names = [port.name for port in cfg.clients]
        self.channels = [port.queue.channel for port in cfg.clients]
        self.ledger.track(self.driver, *self.clients)
        self.ledger.require(CURRENT_WORD + 1, "the current client")
        current = self.ledger.words[CURRENT_WORD]
        self.current = current if current < len(self.clients) else 0
        self.mode = Mode.NORMAL
        self.digits = ""
        self.out = bytearray()  # for the current client, published at the end of each run
        self.wake_peers(cfg.driver.channel, *self.channels)
        self._receive()  # a dead predecessor may have consumed the driver's notification

    def notified(self, ch: int) -> None:
        if ch == self.config.driver.channel:
            self._receive()
        elif ch not in self.channels:  # a client's notification asks for nothing: input it cannot take is dropped
            self.refuse("unknown_channel", f"a notification on channel {ch}, which is no client's")

    def _receive(self) -> None:
        """Take everything the driver has published, a pass at a time; notify the driver once
        room was made if it asked."""
        taken = 0
        while data := self.driver.dequeue(PASS_BYTES):
            taken += len(data)
            for byte in data:
                self._input(byte)
            self._flush()
        if taken and self.driver.signal_needed():
            self.deferred_notify(self.config.driver.channel)

    def _input(self, byte: int) -> None:
        """One typed byte through the switching state machine."""
        cfg = self.config
        if self.mode is Mode.NORMAL:
            if byte == cfg.switch_char:
                self.mode = Mode.SWITCHED
            else:
                self.out.append(byte)
        elif self.mode is Mode.SWITCHED:
            if _is_digit(byte):
                self.digits, self.mode = chr(byte), Mode.NUMBER
            else:
                if byte == cfg.switch_char:
                    self.out.append(byte)
                else:
                    self.refuse("rx.invalid_switch", f"character {bytes([byte])!r} after the switch character")
                self.mode = Mode.NORMAL
        elif byte == cfg.terminator:
            self._switch(int(self.digits))
        elif _is_digit(byte) and len(self.digits) < MAX_DIGITS:
            self.digits += chr(byte)
        else:
            self.refuse("rx.invalid_number", f"character {bytes([byte])!r} after client number "
                                             f"{self.digits!r} (at most {MAX_DIGITS} digits, then the terminator)")
            self.mode = Mode.NORMAL

    def _switch(self, client: int) -> None:
        self.mode = Mode.NORMAL
        if client >= len(self.clients):
            self.refuse("rx.invalid_client", f"switch to client {client}: there are {len(self.clients)}")
            return
        self._flush()
        self.current = client
        self.ledger.set(CURRENT_WORD, client)
        self.counters["switches"] += 1
        self.log(f"switching to client {client} ({self.names[client]!r})")

    def _flush(self) -> None:
        """Publish what was typed for the current client (what does not fit is dropped) and notify it."""
        if not self.out:
            return
        sent = self.clients[self.current].enqueue(self.out)
        if sent < len(self.out):
            self.counters[f"{self.names[self.current]}.rx_dropped"] += len(self.out) - sent
        if sent:
            self.counters[f"{self.names[self.current]}.rx_bytes"] += sent
            self.deferred_notify(self.channels[self.current])
        self.out.clear()


def _is_digit(byte: int) -> bool:
    return 0x30 <= byte <= 0x39
