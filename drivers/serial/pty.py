"""Serial driver for a host terminal, pty or tty: only moves bytes between the device fd and sDDF's serial queues.

The monitor opens the device (irq source ``serial:console``, ``serial:pty`` or
``serial:tty=/dev/…``, see :mod:`sddf.console`) and hands its non-blocking fd over as the irq:
it fires when the device is readable and, while output waits for the device, writable.

Transmit: copy what virt_tx queued, a bounded chunk at a time, write it, and only then release
from the queue what the device took; a partial write or EAGAIN keeps the rest pending (still in
the queue) and arms the irq for writability (no polling), so virt_tx feels the back-pressure and a
restarted driver writes again what its predecessor had not (at most one write is repeated, if it
died between writing and releasing). Having made room, the driver notifies virt_tx only if it asked
(``producer_signalled``). Receive: read what the device has
into the rx queue and notify virt_rx (a producer always notifies); what does not fit is dropped
and counted (``rx_dropped``), as is all input when the system has no virt_rx. A device that hangs
up is reported once and left alone.
"""
from __future__ import annotations

import errno
import os

from sddf.component import Component
from sddf.serial.config import SerialDriverConfig

TX_CHUNK = 0x4000      # bytes copied from the tx queue at a time
TX_PASS = 0x10000      # bytes written per handler pass before letting other events in
RX_CHUNK = 0x1000      # bytes read from the device at a time
RX_PASS = 16           # reads per handler pass
HANGUP = (errno.EIO, errno.ENXIO)


class PtySerialDriver(Component):
    kind = "serial.driver"
    Config = SerialDriverConfig

    def init(self) -> None:
        cfg = self.config
        self.fd = self.device(cfg.device)
        self.tx = cfg.tx.consumer(f"{self.name}:tx", self.regions)
        self.rx = cfg.rx.producer(f"{self.name}:rx", self.regions) if cfg.rx is not None else None
        self.pending = memoryview(b"")  # the front of the tx queue, copied, not yet written nor released
        self.hung_up = False
        self.wake_peers(cfg.tx.channel)  # a dead predecessor may have owed virt_tx the signal it asked for
        self.receive()
        self.transmit()
        self.arm()

    def notified(self, ch: int) -> None:
        if self.hung_up:
            return
        if ch == self.config.device:
            self.receive()
            self.transmit()
            self.arm()
        elif ch == self.config.tx.channel:
            waiting = bool(self.pending)
            self.transmit()
            if bool(self.pending) != waiting:
                self.arm()
        # virt_rx notifies nobody here: input that does not fit is dropped, not held

    def arm(self) -> None:
        """Unmask the device irq: readable always, writable while output is pending (a device that
        hung up stays masked)."""
        if self.hung_up:
            return
        self.irq_ack(self.config.device, writable=bool(self.pending))

    # ---- transmit -------------------------------------------------------------------------
    def transmit(self) -> None:
        """Write queued output until the queue is empty, the device is full, or a pass is done;
        release what was written and tell virt_tx of the room if it asked."""
        budget, released = TX_PASS, 0
        while budget > 0 and (self.pending or self._peek()):
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                self.counters["tx_device_full"] += 1
                break  # the rest waits for the device to be writable
            except OSError as exc:
                self._hangup(exc)
                break
            self.pending = self.pending[written:]
            self.tx.release(written)
            released += written
            budget -= written
        if released:
            self.counters["tx_bytes"] += released
            if self.tx.signal_needed():
                self.notify(self.config.tx.channel)
        if not self.pending and not self.hung_up:
            self._peek()  # more may be queued: pending, it is written when the device is next writable

    def _peek(self) -> bool:
        """Copy the next chunk of output to write. False: none."""
        self.pending = memoryview(self.tx.peek(TX_CHUNK))
        return bool(self.pending)

    # ---- receive --------------------------------------------------------------------------
    def receive(self) -> None:
        """Read what the device has into the rx queue (dropping what does not fit); notify virt_rx."""
        published = 0
        for _ in range(RX_PASS):
            try:
                data = os.read(self.fd, RX_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                self._hangup(exc)
                break
            if not data:
                self._hangup(None)
                break
            taken = self.rx.enqueue(data) if self.rx is not None else 0
            published += taken
            if taken < len(data):
                self.counters["rx_dropped"] += len(data) - taken
        if published:
            self.counters["rx_bytes"] += published
            assert self.config.rx is not None
            self.notify(self.config.rx.channel)

    def _hangup(self, exc: OSError | None) -> None:
        """The device went away (EOF, EIO): say so once and stop serving it (its irq stays masked)."""
        if exc is not None and exc.errno not in HANGUP:
            raise exc
        self.hung_up = True
        self.counters["hangups"] += 1
        self.log(f"the serial device hung up ({exc.strerror if exc else 'end of file'}); "
                 "its input and output are no longer served")
