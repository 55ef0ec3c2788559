"""The Component base class: Microkit's entry points on one single-threaded epoll loop.

A component overrides ``init()``, ``notified(ch)`` and, if others may call it,
``protected(ch, label, mrs)``. It talks with ``notify(ch)`` (sent at once: a driver or
virtualiser caps a pass at a batch, notifies, and goes on), ``deferred_notify(ch)`` (sent
once, when the current handler returns), ``ppcall(ch, label, mrs)`` (a synchronous call
into a higher-priority PD) and ``irq_ack(ch)``. Notifications coalesce like seL4's. ``self.regions[name]`` are its mapped
regions as memoryviews; ``self.config`` is its typed config (``Config`` dataclass).
Nothing polls: the loop sleeps in epoll until a channel, irq or call needs it.
"""
from __future__ import annotations

import os
import select
import signal
import socket
from collections import Counter
from functools import partial
from typing import Any, Callable, ClassVar, Iterator, Mapping, NoReturn

import msgpack

from sddf import atomic
from sddf.config import ChannelGrant, PdConfig, typed
from sddf.ledger import Ledger, ledger_size
from sddf.shm import Region
from sddf.channel import ChannelEnd, ChannelEndFds, Waiter, check_sent, new_timerfd
from sddf.ppc import Callee, Caller, MalformedCall, PPC_CALLEE_FAULTED, PPC_MALFORMED
from sddf.serial.config import SerialClientConfig
from sddf.serial.output import SerialOutput
from sddf.stats import HEARTBEAT_OFFSET, PUBLISH_SIGNAL, STATS_SIZE, StatsWriter

FAULT_MESSAGE_MAX = 64 * 1024  # a child fault report from the monitor: child id and reason
STATS_PERIOD_S = 0.1  # counters are published this long after a wake (so at most this often, and once when idle)


class GrantError(Exception):
    """A component used something its system description did not grant it."""


class Regions(Mapping[str, memoryview]):
    """A PD's mapped regions by map name; asking for anything else is a clear fault."""

    def __init__(self, pd: str, regions: dict[str, Region]) -> None:
        self._pd = pd
        self._regions = regions

    def __getitem__(self, name: str) -> memoryview:
        region = self._regions.get(name)
        if region is None:
            raise GrantError(f"PD {self._pd!r} has no map named {name!r} "
                             f"(it was granted: {sorted(self._regions) or 'none'})")
        return region.view

    def region(self, name: str) -> Region:
        self[name]
        return self._regions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._regions)

    def __len__(self) -> int:
        return len(self._regions)


class Component:
    """Base class of every program a protection domain runs."""

    #: components of the same kind can be swapped for each other at run time
    kind: ClassVar[str] = "component"
    #: the dataclass ``self.config`` is built from (None: the component takes no config)
    Config: ClassVar[type | None] = None

    def __init__(self, pd: PdConfig) -> None:
        self.name = pd.name
        self.pd = pd
        self.config: Any
        #: its serial grant (``Sddf.Serial.add_client``): a console its :meth:`log` lines go to
        self.serial: SerialClientConfig | None
        self.config, self.serial = self.typed_config(pd.app, f"PD {pd.name!r}")
        self.regions = Regions(pd.name, {
            name: Region.from_fd(name, g.fd, g.size, g.writable) for name, g in pd.regions.items()})
        self.__channels: dict[int, ChannelEnd] = {}
        #: channel -> its notifier's one C call (``sddf.testing`` wraps these to record notifies)
        self._sends: dict[int, Callable[[], int]] = {}
        #: channel -> the call path into a higher-priority PD (``sddf.testing`` calls in-process)
        self._calls: dict[int, Caller] = {}
        self._waiter = Waiter()
        self.__outbox: set[int] = set()
        #: bumped by every notify and every commit that publishes (in C): the wait judges by it
        #: whether a wake-up found work
        self._progress = atomic.ffi.new("uint64_t[1]")
        #: counters the monitor can read while the PD runs (``sddf counters``)
        self.counters: Counter[str] = Counter()
        self.console = (SerialOutput(self.serial.tx.producer(f"{pd.name}:serial_tx", self.regions), self.counters)
                        if self.serial is not None else None)
        self.__stats_page = Region.from_fd("stats", pd.stats_fd, STATS_SIZE, True) if pd.stats_fd >= 0 else None
        self.__stats = StatsWriter(self.__stats_page.view) if self.__stats_page else None
        ledger_page = Region.from_fd("ledger", pd.ledger_fd, ledger_size(pd.ledger_words), True) if pd.ledger_fd >= 0 else None
        #: its ledger: the queue ends it tracks commit together, and its words survive a restart (sddf.ledger)
        self.ledger = Ledger(pd.name, ledger_page.view if ledger_page else bytearray(ledger_size(pd.ledger_words)),
                             pd.ledger_words, self.regions)
        self.ledger.count_progress(self._progress)
        self._waiter.count_progress(self._progress)
        self.__ledger_page = ledger_page  # the mapping lives as long as the component
        if self.__stats_page is not None:
            # the heartbeat (odd while handlers run, for the monitor's watchdog) and the counters'
            # publishing, both kept by the wait (off the handlers' path)
            self._waiter.beat_on(self.__stats_page.view, HEARTBEAT_OFFSET)
            self._waiter.publish_with(new_timerfd(), STATS_PERIOD_S, self.__publish_stats)
        self._waiter.poll_for(pd.poll_us)
        for ch, grant in pd.channels.items():
            end = ChannelEnd.attach(_end_fds(grant))
            self.__channels[ch] = end
            self._sends[ch] = end.notifier.send
            self._waiter.add_notification(ch, end.notification)
            if grant.call is not None:
                path = f"channel {ch} ({pd.name} <-> {grant.peer})"
                if grant.can_call:
                    self._calls[ch] = Caller(grant.call, path)
                elif grant.serves_calls:
                    callee = Callee(grant.call, path)
                    self._waiter.add_callback(callee.fileno(), partial(self.__serve, ch, callee),
                                               select.EPOLLIN | select.EPOLLET)
        self.__irq_fds: dict[int, int] = {}  # channel -> the fd that raises its irq
        for ch, fd in pd.irqs.items():
            if self._waiter.add_irq(ch, fd):
                self.__irq_fds[ch] = fd
        if pd.child_faults_fd >= 0:
            faults = socket.socket(fileno=pd.child_faults_fd)
            self._waiter.add_callback(pd.child_faults_fd, lambda: self.__child_fault(faults))

    @classmethod
    def typed_config(cls, app: dict[str, Any], owner: str) -> tuple[Any, SerialClientConfig | None]:
        """The PD's config as its ``Config`` (None without one) and its serial grant (the config's
        ``serial`` entry, which any component may have); a ConfigError names ``owner`` and the field."""
        serial = None
        if isinstance(app, dict) and "serial" in app:
            app = dict(app)
            serial = app.pop("serial")
        return (typed(cls.Config, app, owner) if cls.Config else None,
                typed(SerialClientConfig, serial, f"{owner}.serial") if serial is not None else None)

    # ---- entry points (override) --------------------------------------------------------
    def init(self) -> None:
        """Called once when the PD starts (and again after each restart)."""

    def notified(self, ch: int) -> None:
        """Channel ``ch`` was notified, or its irq fired."""
        raise NotImplementedError(f"PD {self.name!r} got a notification on channel {ch} "
                                  f"but {type(self).__name__} does not handle notifications")

    def protected(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        """Answer a protected procedure call on channel ``ch``: return (label, message registers)."""
        raise NotImplementedError(f"PD {self.name!r} got a PPC on channel {ch} "
                                  f"but {type(self).__name__} does not accept calls")

    def fault(self, child: int, reason: str) -> bool:
        """Child ``child`` (its id from ``add_child_pd``) faulted: return True to restart it,
        False to leave it stopped (the rest of the system runs on)."""
        return False

    def console_room(self) -> None:
        """virt_tx made room on the console's queue and what :meth:`console_write` held has moved
        on (override to write more, as a flood does)."""

    # ---- services -----------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Print ``"<pd>: message"`` as one line: on the PD's serial console when it has one (as a
        LionsOS client's printf), else on the monitor's stdout in one write, so lines from PDs
        never interleave (print() issues two writes when Python runs unbuffered)."""
        if self.console is None:
            os.write(1, f"{self.name}: {message}\n".encode())
        else:
            self.console_write(f"{self.name}: {message}\r\n")

    def console_write(self, data: bytes | str) -> None:
        """Write ``data`` on the PD's serial console: onto its queue (virt_tx notified when the
        handler returns), the rest held until virt_tx makes room (see :mod:`sddf.serial.output`)."""
        if self.console is None:
            raise GrantError(f"PD {self.name!r} has no serial console (Sddf.Serial.add_client grants one)")
        if self.console.write(data.encode() if isinstance(data, str) else data):
            assert self.serial is not None  # the console is made from it
            self.deferred_notify(self.serial.tx.channel)

    def refuse(self, counter: str, message: object) -> None:
        """Count something refused from a peer; print it the first time only, so a misbehaving
        peer cannot flood the console (the counter keeps the tally: ``sddf counters``)."""
        self.counters[counter] += 1
        if self.counters[counter] == 1:
            self.log(f"refused: {message}")

    def notify(self, ch: int) -> None:
        """Notify the PD at the other end of ``ch`` now (Microkit's ``microkit_notify``)."""
        send = self._sends.get(ch)
        if send is None:
            self.__no_channel(ch)
        if self.ledger.pending[0]:
            self.ledger.commit()  # what it tells of is published first
        self._progress[0] += 1
        status = send()
        if status < 0:
            check_sent(status, self.__channels[ch].notifier.eventfd)

    def deferred_notify(self, ch: int) -> None:
        """Notify the PD at the other end of ``ch`` once the current handler returns (Microkit's
        ``microkit_deferred_notify``; unlike Microkit, every channel deferred in a handler is sent,
        not only the last)."""
        if ch not in self._sends:
            self.__no_channel(ch)
        self.__outbox.add(ch)

    def wake_peers(self, *channels: int) -> None:
        """After a restart, notify the peers on ``channels`` once the handler returns: the dead
        instance may have claimed a signal one of them asked for and died before sending it (a
        spurious notification is harmless: a peer re-examines its queues). Nothing on a first start."""
        if not self.ledger.fresh:
            for ch in channels:
                self.deferred_notify(ch)

    def __no_channel(self, ch: int) -> NoReturn:
        raise GrantError(f"PD {self.name!r} has no channel {ch} (it has: {sorted(self.__channels)})")

    def ppcall(self, ch: int, label: int, mrs: list[int] | tuple[int, ...] = ()) -> tuple[int, list[int]]:
        """Call the higher-priority PD at the other end of ``ch`` and wait for its answer."""
        caller = self._calls.get(ch)
        if caller is None:
            raise GrantError(f"PD {self.name!r} may not ppcall on channel {ch}")
        out_label, out_mrs = caller.call(label, mrs)
        if out_label == PPC_CALLEE_FAULTED:
            raise ConnectionError(f"PD {self.name!r}: the PD called on channel {ch} "
                                  f"({self.pd.channels[ch].peer}) faulted during the call")
        return out_label, out_mrs

    def irq_ack(self, ch: int, writable: bool = False) -> None:
        """Re-enable the irq on channel ``ch`` (it stays masked after firing until acked); with
        ``writable`` it fires when the device can take output too (a driver with output pending)."""
        fd = self.__irq_fds.get(ch)
        if fd is None:
            raise GrantError(f"PD {self.name!r} has no irq on channel {ch}")
        self._waiter.irq_ack(fd, select.EPOLLIN | (select.EPOLLOUT if writable else 0))

    def device(self, ch: int) -> int:
        """The host device fd granted as the irq on channel ``ch`` (a TAP, a timerfd, an image file)."""
        fd = self.pd.irqs.get(ch)
        if fd is None:
            raise GrantError(f"PD {self.name!r} has no device on channel {ch}")
        return fd

    def raise_irq_from(self, ch: int, fd: int) -> None:
        """Make ``fd`` (an eventfd the driver's I/O threads write) raise channel ``ch``'s irq: for a
        device that cannot signal by itself, such as an image file (see :meth:`Waiter.add_irq`)."""
        if ch not in self.pd.irqs or ch in self.__irq_fds:
            raise GrantError(f"PD {self.name!r}: channel {ch} is not a device irq that cannot signal")
        self._waiter.add_irq(ch, fd)
        self.__irq_fds[ch] = fd

    # ---- the loop -----------------------------------------------------------------------
    def run(self, after_init: Callable[[], None] = lambda: None) -> None:
        """Run ``init``, then ``after_init`` (the runtime's sandbox), then handle events until
        SIGTERM (exceptions end the PD as a fault).

        SIGTERM (how the monitor stops, restarts or swaps a PD) ends the loop between two
        handlers, never inside one, so no batch is left half-moved between queues."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(PUBLISH_SIGNAL, lambda *_: None)
        self._waiter.add_callback(wake_r, lambda: self.__signalled(wake_r))
        self._waiter.enter()  # init is a handler too, for the watchdog
        self.start()
        after_init()
        self.__publish_stats()  # tells the monitor this PD is up and answers PUBLISH_SIGNAL
        # the hot loop: bound methods in locals; the wait keeps the heartbeat, the counters'
        # publishing and the count of wake-ups (sddf.channel.Waiter)
        wait, notified, finish = self._waiter.wait, self.__handler(), self.__finish
        while True:
            for ch in wait():
                notified(ch)
                finish()

    def __finish(self) -> None:
        """After a handler: commit, and send what was deferred."""
        if self.ledger.pending[0]:
            self.ledger.commit()
        if self.__outbox:
            self.__flush()

    def start(self) -> None:
        """Run ``init``, commit what it moved and send what it deferred."""
        self.init()
        self.ledger.commit()
        self.__flush()

    def handle_pending(self) -> list[int]:
        """Handle the channels pending now, without sleeping, as the loop would; return them
        (how ``sddf.testing`` steps a component in-process)."""
        handled = self._waiter.wait(0)
        notified = self.__handler()
        for ch in handled:
            notified(ch)
            self.__finish()
        self._waiter.settle()  # so the counters read next count this wake
        self.__count_wakeups()
        return handled

    def __handler(self) -> Callable[[int], None]:
        """What the loop calls for a notified channel: ``notified``, except that a signal on the
        console's tx channel (virt_tx made room, as asked) sends what the console held first."""
        notified = self.notified
        if self.serial is None:
            return notified
        console, channel, room = self.console, self.serial.tx.channel, self.console_room

        def handle(ch: int) -> None:
            if ch != channel:
                notified(ch)
                return
            assert console is not None
            if console.flush():
                self.deferred_notify(channel)
            room()
        return handle

    def __signalled(self, wake_r: int) -> None:
        """A signal with a Python handler arrived: SIGTERM ends the loop, PUBLISH_SIGNAL (the
        monitor asking for fresh counters) publishes them now, others are the PD's own."""
        try:
            signums = os.read(wake_r, 64)
        except BlockingIOError:
            return
        if signal.SIGTERM in signums:
            raise SystemExit(0)
        if PUBLISH_SIGNAL in signums:
            self.__publish_stats()

    def __publish_stats(self) -> None:
        if self.__stats is not None:
            self.__count_wakeups()
            self.__stats.publish(self.counters)

    def __count_wakeups(self) -> None:
        """Bring the wait's wake-up counts into :attr:`counters`: ``wakeups`` (channels handled),
        ``unproductive_wakeups`` (of them, in wakes whose handlers neither published through a
        queue nor notified anyone: sDDF's design calls these unproductive; ``sddf counters``,
        ``sddf top``) and ``unproductive_wakeups.chN`` per channel."""
        wakeups, unproductive, by_channel = self._waiter.wake_counts()
        counts = {"wakeups": wakeups, "unproductive_wakeups": unproductive,
                  **{f"unproductive_wakeups.ch{ch}": n for ch, n in by_channel.items()}}
        for key, n in counts.items():
            if n:
                self.counters[key] = n

    def __serve(self, ch: int, callee: Callee) -> None:
        try:
            request = callee.take()
        except MalformedCall as exc:
            self.log(f"refused a malformed PPC: {exc}")
            callee.answer(PPC_MALFORMED, [])
            return
        if request is not None:
            callee.answer(*self.answer_call(ch, *request))

    def answer_call(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        """Answer a PPC as the loop does: ``protected``, then send what it deferred (how
        ``sddf.testing`` makes calls in-process)."""
        reply = self.protected(ch, label, mrs)
        self.ledger.commit()
        self.__flush()
        return reply

    def __child_fault(self, sock: socket.socket) -> None:
        child, reason = msgpack.unpackb(sock.recv(FAULT_MESSAGE_MAX))
        sock.sendall(msgpack.packb(bool(self.fault(child, reason))))
        self.ledger.commit()
        self.__flush()

    def __flush(self) -> None:
        outbox, sends = self.__outbox, self._sends
        while outbox:
            ch = outbox.pop()
            self._progress[0] += 1
            status = sends[ch]()
            if status < 0:
                check_sent(status, self.__channels[ch].notifier.eventfd)


def _end_fds(grant: ChannelGrant) -> ChannelEndFds:
    return ChannelEndFds(grant.recv_eventfd, grant.send_eventfd, grant.words_fd,
                         grant.recv_offset, grant.send_offset)
