"""Simulated devices behind irq channels: a TAP with a host on its far side, a timerfd on virtual time.

Each device stands where the monitor would open a host device (``Monitor(devices=...)``). Its
irq works as Microkit's: delivered (by the scheduler, after a seeded latency), then masked until
the driver acks it; a device still ready at the ack fires again.

- ``tap:…`` — one end of a datagram socketpair; the driver reads and writes the other as it would
  a TAP. The :class:`NetHost` on our end sends seeded traffic (UDP echo requests to each client,
  ARP requests broadcast to a client's address, datagrams to a MAC nobody has), answers the
  clients' ARP requests, and checks what comes back: each echo exactly once from the right client,
  nothing for the unknown MAC. Clients are the PDs whose config has ``mac`` and ``ip`` in the TAP's
  subnet; they are expected to answer UDP echo on port 1235 as the bundled echo server does.
- ``serial:…`` — a console as one end of a stream socketpair: what the driver writes is taken at
  every step (:attr:`ConsoleDevice.output`); nothing is typed, so its irq never fires (the buffer
  is far larger than a step can fill, so the driver never waits for room).
- ``timerfd`` — virtual time: ``time.monotonic``/``monotonic_ns`` read the scheduler's clock, and
  the bundled timer driver's ``arm_timerfd`` (``sddf.drivers.timer.timerfd``) sets an expiry that
  the scheduler raises at its virtual deadline.
"""
from __future__ import annotations

import importlib
import ipaddress
import select
import socket
import time
from dataclasses import dataclass
from typing import Callable

from sddf.devices import parse_source, open_device
from sddf.sim import frames
from sddf.sim.scheduler import Event, Scheduler

ECHO_PORT = 1235  # the bundled echo server's UDP echo port
HOST_PORT = 40000
HOST_MAC = bytes.fromhex("02534d000001")
FRAME_SOCKET_BUFFER = 4 * 1024 * 1024
TIMER_DRIVER = "sddf.drivers.timer.timerfd"
SHOWN = 8  # frames of a burst named in the trace


class SimError(Exception):
    """The system asks for something the simulator cannot provide."""


def device_pair(kind: int) -> tuple[socket.socket, int]:
    """A device as a non-blocking socket pair with large buffers: our end, and the fd of the
    driver's (the monitor owns and closes it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FRAME_SOCKET_BUFFER)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FRAME_SOCKET_BUFFER)
        end.setblocking(False)
    return ours, theirs.detach()


class IrqLine:
    """One irq channel of a PD: raised by its device, masked from delivery until acked."""

    def __init__(self, pd: str, ch: int, deliver: Callable[[str, int], None], ready: Callable[[], bool]) -> None:
        self.pd, self.ch = pd, ch
        self._deliver, self._ready = deliver, ready
        self.masked = False

    def fire(self) -> None:
        """The device became ready: deliver unless masked (then the ack delivers)."""
        if not self.masked:
            self.masked = True
            self._deliver(self.pd, self.ch)

    def ack(self) -> None:
        self.masked = False
        if self._ready():
            self.fire()


# ---- the network --------------------------------------------------------------------------------
@dataclass
class Client:
    name: str
    mac: bytes
    ip: str


@dataclass
class Owed:
    """A frame the host sent that must be answered (once)."""

    client: str
    epoch: int
    answers: int = 0
    excused: bool = False


class TapDevice:
    """A TAP as a socketpair: the driver holds one end, :attr:`host` the other."""

    def __init__(self, source: str, sched: Scheduler, clients: list[Client], epoch: Callable[[], int]) -> None:
        self.sock, self.fd = device_pair(socket.SOCK_DGRAM)
        self._readable = select.poll()
        self._readable.register(self.fd, select.POLLIN)
        self.line: IrqLine | None = None
        self.drop_next: str | None = None  # a fault: "in" or "out" drops the next frame that way
        options = parse_source(source)[1]
        network = ipaddress.IPv4Interface(options.get("addr", "10.0.0.1/24"))
        mac = bytes.fromhex(options["mac"].replace(":", "")) if "mac" in options else HOST_MAC
        self.host = NetHost(self, sched, [c for c in clients if ipaddress.IPv4Address(c.ip) in network.network],
                            mac, str(network.ip), epoch)

    def ready(self) -> bool:
        return bool(self._readable.poll(0))

    def send(self, frame: bytes, what: str) -> bool:
        """Put ``frame`` on the wire to the driver (False: a drop fault took it, or the TAP is full)."""
        if self.drop_next == "in":
            self.drop_next = None
            self.host.sched.log(f"fault: dropped frame in ({what})")
            return False
        try:
            self.sock.send(frame)
        except BlockingIOError:
            self.host.sched.log(f"the TAP is full: dropped frame in ({what})")
            return False
        return True

    def poll(self) -> list[str]:
        """Take what the driver transmitted to the host; the problems the host found in it."""
        problems = []
        while True:
            try:
                frame = self.sock.recv(65536)
            except BlockingIOError:
                return problems
            if self.drop_next == "out":
                self.drop_next = None
                self.host.lost(frame)
                continue
            problems += self.host.received(frame)

    def close(self) -> None:
        self.sock.close()


class NetHost:
    """The host on the far side of a TAP: seeded traffic out, answers checked (module docstring)."""

    def __init__(self, tap: TapDevice, sched: Scheduler, clients: list[Client], mac: bytes, ip: str,
                 epoch: Callable[[], int]) -> None:
        self.tap, self.sched, self.clients, self.mac, self.ip, self.epoch = tap, sched, clients, mac, ip, epoch
        self.by_ip = {c.ip: c for c in clients}
        self.sent = 0
        self.owed: dict[bytes, Owed] = {}  # echo payload -> who must answer it
        self.probes: dict[str, list[Owed]] = {}  # client address -> ARP requests it must answer
        self.silent: set[bytes] = set()  # payloads sent to a MAC nobody has

    def burst(self, count: int) -> None:
        """Send ``count`` seeded frames of every kind (one event) and raise the irq."""
        rng, told = self.sched.rng, []
        for _ in range(count):
            self.sent += 1
            client = rng.choice(self.clients)
            kind = rng.random()
            if kind < 0.7:
                told.append(self._echo(client, client.mac))
            elif kind < 0.85:
                told.append(self._probe(client))
            else:
                told.append(self._echo(client, bytes.fromhex("02ffffff00") + bytes([self.sent & 0xFF])))
        self._sent(told)

    def flood(self, client: Client, count: int) -> None:
        """Send ``count`` echo requests to ``client`` (one event)."""
        told = []
        for _ in range(count):
            self.sent += 1
            told.append(self._echo(client, client.mac))
        self._sent(told)

    def _sent(self, told: list[str]) -> None:
        shown = ", ".join(told[:SHOWN]) + (f", … ({len(told) - SHOWN} more)" if len(told) > SHOWN else "")
        self.sched.log(f"frames in: {shown}")
        if self.tap.line is not None:
            self.tap.line.fire()

    def _echo(self, client: Client, mac: bytes) -> str:
        payload = b"sim %d" % self.sent
        what = f"echo #{self.sent}→{client.name if mac == client.mac else 'unknown MAC'}"
        if self.tap.send(frames.udp(self.mac, self.ip, HOST_PORT, mac, client.ip, ECHO_PORT, payload), what):
            if mac == client.mac:
                self.owed[payload] = Owed(client.name, self.epoch())
            else:
                self.silent.add(payload)
        return what

    def _probe(self, client: Client) -> str:
        what = f"arp who-has {client.ip}"
        request = frames.arp(frames.ARP_REQUEST, self.mac, self.ip, frames.BROADCAST, b"\0" * 6, client.ip)
        if self.tap.send(request, what):
            self.probes.setdefault(client.ip, []).append(Owed(client.name, self.epoch()))
        return what

    def received(self, frame: bytes) -> list[str]:
        """Check a frame the system transmitted, answer an ARP request for us; the problems."""
        said = frames.parse(frame)
        if isinstance(said, frames.Arp):
            client = self.by_ip.get(said.sender_ip)
            if said.op == frames.ARP_REQUEST and said.target_ip == self.ip:
                self.sched.log(f"frame out: arp who-has {self.ip} from {said.sender_ip}; answered")
                reply = frames.arp(frames.ARP_REPLY, self.mac, self.ip, said.sender_mac, said.sender_mac,
                                   said.sender_ip)
                self.sched.at(self.sched.delay(), "frame in: arp reply", lambda: self._answer(reply))
            elif said.op == frames.ARP_REPLY and client is not None:
                self._answered(client.ip)
                self.sched.log(f"frame out: arp reply from {client.name}")
            return []
        if isinstance(said, frames.Datagram) and said.sport == ECHO_PORT:
            return self._echoed(said)
        self.sched.log(f"frame out: {len(frame)} bytes, not ARP or an echo")
        return []

    def _answer(self, frame: bytes) -> None:
        if self.tap.send(frame, "arp reply") and self.tap.line is not None:
            self.tap.line.fire()

    def _echoed(self, said: frames.Datagram) -> list[str]:
        owed = self.owed.get(said.payload)
        self.sched.log(f"frame out: echo {said.payload.decode(errors='replace')!r} from {said.src_ip}")
        if owed is None:
            kind = "sent to a MAC nobody has" if said.payload in self.silent else "never sent"
            return [f"an echo of {said.payload!r} from {said.src_ip}: that datagram was {kind}"]
        owed.answers += 1
        client = next(c for c in self.clients if c.name == owed.client)
        if said.src_ip != client.ip:
            return [f"the echo of {said.payload!r}, sent to {client.name}, came from {said.src_ip}"]
        if owed.answers > 1 and not self._excused(owed):
            return [f"{client.name} echoed {said.payload!r} {owed.answers} times with no fault since it was sent"]
        return []

    def lost(self, frame: bytes) -> None:
        """A drop fault took a frame on its way out: whatever it answered need not be answered."""
        said = frames.parse(frame)
        if isinstance(said, frames.Datagram) and said.payload in self.owed:
            self.owed[said.payload].excused = True
        elif isinstance(said, frames.Arp) and said.op == frames.ARP_REPLY:
            self._answered(said.sender_ip)
        self.sched.log(f"fault: dropped frame out ({type(said).__name__ if said else 'other'})")

    def _answered(self, ip: str) -> None:
        """An ARP reply from ``ip``: it answers the oldest request a fault did not excuse (replies
        look alike, and those excused may never come)."""
        probes = self.probes.get(ip, [])
        probes[:] = [p for p in probes if not self._excused(p)]
        if probes:
            probes.pop(0)

    def _excused(self, owed: Owed) -> bool:
        return owed.excused or owed.epoch != self.epoch()

    def unanswered(self) -> list[str]:
        """What the system still owes the host (the epoch moving since a frame was sent excuses it:
        a fault struck, or the system had not recovered from one)."""
        problems = [f"the echo request {payload!r} to {owed.client} was never answered"
                    for payload, owed in self.owed.items() if not owed.answers and not self._excused(owed)]
        problems += [f"the ARP request for {ip} was never answered by {probes[0].client}"
                     for ip, probes in self.probes.items() if any(not self._excused(p) for p in probes)]
        return problems


# ---- the console ------------------------------------------------------------------------------
class ConsoleDevice:
    """A serial device whose output is collected; nothing is typed at it."""

    def __init__(self) -> None:
        self.sock, self.fd = device_pair(socket.SOCK_STREAM)
        self.line: IrqLine | None = None
        self.output = bytearray()

    def ready(self) -> bool:
        return False

    def poll(self) -> list[str]:
        """Take what the driver wrote (never a problem)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return []
            if not data:
                return []
            self.output += data

    def close(self) -> None:
        self.sock.close()


# ---- time ---------------------------------------------------------------------------------------
class TimerDevice:
    """A timerfd whose expiry the scheduler raises at its virtual deadline."""

    def __init__(self, source: str, sched: Scheduler) -> None:
        self.fd = open_device(source)  # a real timerfd, never armed: the driver's reads find it empty
        self.sched = sched
        self.line: IrqLine | None = None
        self.expired = False
        self._event: Event | None = None

    @property
    def armed(self) -> bool:
        return self._event is not None and not self._event.done

    def ready(self) -> bool:
        ready, self.expired = self.expired, False
        return ready

    def arm(self, deadline_ns: int) -> None:
        if self._event is not None:
            self.sched.cancel(self._event)
            self._event = None
        if deadline_ns:
            self._event = self.sched.at(deadline_ns - self.sched.now, "timer expires", self._expire, background=True)

    def _expire(self) -> None:
        self.expired = True
        if self.line is not None and not self.line.masked:
            self.expired = False
            self.line.fire()


class Devices:
    """Every simulated device of one system: the monitor opens them through :meth:`open`."""

    def __init__(self, sched: Scheduler, clients: list[Client], epoch: Callable[[], int]) -> None:
        self.sched, self.clients, self.epoch = sched, clients, epoch
        self.by_fd: dict[int, TapDevice | TimerDevice | ConsoleDevice] = {}
        self._restore: list[Callable[[], None]] = []

    def open(self, source: str) -> int:
        kind = parse_source(source)[0]
        device: TapDevice | TimerDevice | ConsoleDevice
        if kind == "tap":
            device = TapDevice(source, self.sched, self.clients, self.epoch)
        elif kind == "timerfd":
            device = TimerDevice(source, self.sched)
        elif kind == "serial":
            device = ConsoleDevice()
        else:
            raise SimError(f"irq source {source!r}: the simulator has no {kind!r} device")
        self.by_fd[device.fd] = device
        return device.fd

    def bind(self, pd: str, ch: int, fd: int, deliver: Callable[[str, int], None]) -> IrqLine:
        """Connect the device the monitor gave ``pd`` as irq channel ``ch``."""
        device = self.by_fd[fd]
        device.line = IrqLine(pd, ch, deliver, device.ready)
        return device.line

    @property
    def taps(self) -> list[TapDevice]:
        return [d for d in self.by_fd.values() if isinstance(d, TapDevice)]

    def poll(self) -> list[str]:
        """Take what the drivers sent to their devices; the problems found in it."""
        return [problem for d in self.by_fd.values() if not isinstance(d, TimerDevice) for problem in d.poll()]

    @property
    def timers_armed(self) -> bool:
        return any(d.armed for d in self.by_fd.values() if isinstance(d, TimerDevice))

    def install(self) -> None:
        """Virtual time: the clock reads the scheduler's, and the timer driver arms our timers."""
        originals = time.monotonic, time.monotonic_ns
        time.monotonic_ns = lambda: self.sched.now
        time.monotonic = lambda: self.sched.now / 1e9
        self._restore.append(lambda: setattr(time, "monotonic", originals[0]))
        self._restore.append(lambda: setattr(time, "monotonic_ns", originals[1]))
        if any(isinstance(d, TimerDevice) for d in self.by_fd.values()):
            driver = importlib.import_module(TIMER_DRIVER)
            arm = driver.arm_timerfd
            driver.arm_timerfd = lambda fd, deadline: self.by_fd[fd].arm(deadline)  # type: ignore[union-attr]
            self._restore.append(lambda: setattr(driver, "arm_timerfd", arm))

    def close(self) -> None:
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        for device in self.by_fd.values():
            if not isinstance(device, TimerDevice):
                device.close()  # the monitor closes the fds it was given
