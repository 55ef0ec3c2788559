"""Notifications between components: channels, irqs, and the Waiter a component sleeps in.

A channel direction is an eventfd plus a *pending* word in memory shared by the channel's
two ends only. ``notify`` sets the word and writes the eventfd only if the word was clear,
so many notifies before the receiver runs cost one wake-up (seL4 notification semantics).
The receiver waits on all its eventfds (and device fds bound to irq channels) with epoll
and learns the set of channels that were signalled.

sDDF's signalling protocol for queue users lives on the queue ends (``sddf.queue.ring``);
protected procedure calls in ``sddf.ppc``.
"""
from __future__ import annotations

import os
import select
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from sddf import atomic
from sddf.shm import PAGE_SIZE, Region

WORD_SIZE = 8
MAX_EVENTS = 64  # what one wait reports at most (more stay ready for the next)
#: what a fd in a Waiter is (pd_source.kind in _ring.h)
SOURCE_NOTIFICATION, SOURCE_IRQ, SOURCE_CALLBACK, SOURCE_PUBLISH_TIMER = 1, 2, 3, 4
pd_wait = atomic.lib.pd_wait
unpack = atomic.ffi.unpack


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def new_timerfd() -> int:
    """A non-blocking CLOCK_MONOTONIC timerfd (raises OSError)."""
    fd = atomic.lib.new_timerfd()
    if fd < 0:
        raise OSError(-fd, f"timerfd_create: {os.strerror(-fd)}")
    return fd


class Notifier:
    """The sending side of one channel direction."""

    def __init__(self, eventfd: int, words: Any, offset: int) -> None:
        self.eventfd = eventfd
        self._ptr = atomic.pointer(words)
        self._offset = offset
        #: one C call: set the pending word, write the eventfd if it was clear; returns 0 (was
        #: pending), 1 (written) or -errno (the write failed). :meth:`notify` raises instead.
        self.send: Callable[[], int] = partial(atomic.notify_word, self._ptr, offset, eventfd)

    def notify(self) -> None:
        check_sent(self.send(), self.eventfd)


def check_sent(status: int, eventfd: int) -> None:
    """Raise for a failed :attr:`Notifier.send` (``status`` is -errno)."""
    if status < 0:
        raise OSError(-status, f"notify: eventfd {eventfd}: {os.strerror(-status)}")


class Notification:
    """The receiving side of one channel direction: its eventfd and its pending word, which a
    :class:`Waiter` claims (exchanges with 0) when the eventfd fires. The eventfd is never read:
    waiters watch it edge-triggered, and every notifier write (made only when the word was
    clear) is a new edge. The counter only grows; it would take 2**64 - 2 notifies to fill it."""

    def __init__(self, eventfd: int, words: Any, offset: int) -> None:
        self.eventfd = eventfd
        self._words = atomic.pointer(words)  # keeps the words' memory mapped while we live
        self.word = self._words + offset

    def fileno(self) -> int:
        return self.eventfd


@dataclass(frozen=True)
class ChannelEndFds:
    """What one end of a channel needs, as plain values that survive fd passing and msgpack."""

    recv_eventfd: int
    send_eventfd: int
    words_fd: int
    recv_offset: int
    send_offset: int


class ChannelEnd:
    """One end of a channel: notify the peer, and be notified by it."""

    def __init__(self, fds: ChannelEndFds, words: Region) -> None:
        self.fds = fds
        self._words = words
        self.notification = Notification(fds.recv_eventfd, words.view, fds.recv_offset)
        self.notifier = Notifier(fds.send_eventfd, words.view, fds.send_offset)

    @classmethod
    def attach(cls, fds: ChannelEndFds) -> "ChannelEnd":
        return cls(fds, Region.from_fd("channel", fds.words_fd, PAGE_SIZE, True))

    def notify(self) -> None:
        self.notifier.notify()

    def close(self) -> None:
        """Close this end's fds (drop any Waiter holding its notification first)."""
        notification, notifier = self.notification, self.notifier
        self.notification = self.notifier = None  # type: ignore[assignment]
        del notification, notifier  # their pointers into the words page must go before it closes
        self._words.close()
        for fd in (self.fds.recv_eventfd, self.fds.send_eventfd):
            os.close(fd)


def channel_pair() -> tuple[ChannelEndFds, ChannelEndFds]:
    """Make a channel's eventfds and shared pending words; return the fds of both ends.

    Each end has fds of its own (the caller owns them: pass each end's to its process, or
    attach with :meth:`ChannelEnd.attach`), so closing one end never closes the other's.
    """
    a_to_b, b_to_a = new_eventfd(), new_eventfd()
    words = os.memfd_create("sddf:channel", os.MFD_CLOEXEC)
    os.ftruncate(words, PAGE_SIZE)
    end_a = ChannelEndFds(recv_eventfd=b_to_a, send_eventfd=a_to_b, words_fd=words,
                          recv_offset=0, send_offset=WORD_SIZE)
    end_b = ChannelEndFds(recv_eventfd=os.dup(a_to_b), send_eventfd=os.dup(b_to_a), words_fd=os.dup(words),
                          recv_offset=WORD_SIZE, send_offset=0)
    return end_a, end_b


class Waiter:
    """Blocks until channels are notified or irq fds are ready; returns the channel ids.

    The wait is one C call (``pd_wait``): it sleeps in epoll, claims the pending word of each
    notification that fired, and keeps the PD's heartbeat (:meth:`beat_on`) and counters' publish
    timer (:meth:`publish_with`); Python runs only for the callbacks it reports."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._c = atomic.ffi.new("pd_waiter *")
        self._c.epfd = self._epoll.fileno()
        self._c.timerfd = -1
        self._sources = atomic.ffi.new("pd_source[]", 0)
        self._out = atomic.ffi.new("int32_t[]", MAX_EVENTS)
        self._anchors: list[Any] = []  # what the sources' and heartbeat's bare pointers point into
        self._words: list[Any] = []  # the notifications' pending words (what a bounded poll watches)
        self._poll_words = atomic.ffi.new("uint8_t *[]", 0)

    def _source(self, fd: int, kind: int, channel: int = -1, word: Any = atomic.NULL) -> None:
        if fd >= len(self._sources):
            grown = atomic.ffi.new("pd_source[]", max(fd + 1, 2 * len(self._sources), 64))
            atomic.ffi.memmove(grown, self._sources, atomic.ffi.sizeof(self._sources))
            self._sources, self._c.sources, self._c.nsources = grown, grown, len(grown)
        entry = self._sources[fd]
        entry.kind, entry.channel, entry.word = kind, channel, word

    def add_notification(self, channel: int, notification: Notification) -> None:
        self._anchors.append(notification)  # the source holds a bare pointer into its words
        self._source(notification.fileno(), SOURCE_NOTIFICATION, channel, notification.word)
        self._words.append(notification.word)
        self._poll_words = atomic.ffi.new("uint8_t *[]", self._words)
        self._c.poll_words, self._c.npoll = self._poll_words, len(self._words)
        self._epoll.register(notification.fileno(), select.EPOLLIN | select.EPOLLET)

    def add_irq(self, channel: int, fd: int, events: int = select.EPOLLIN) -> bool:
        """A device fd as an irq: masked after it fires until :meth:`irq_ack` (Microkit semantics).
        Returns False for a device that cannot signal (a regular file or a block device, which
        epoll refuses): it is never ready, and raises no irq."""
        try:
            self._epoll.register(fd, events | select.EPOLLONESHOT)
        except PermissionError:
            return False
        self._source(fd, SOURCE_IRQ, channel)
        return True

    def irq_ack(self, fd: int, events: int = select.EPOLLIN) -> None:
        self._epoll.modify(fd, events | select.EPOLLONESHOT)

    def add_callback(self, fd: int, callback: Callable[[], None], events: int = select.EPOLLIN) -> None:
        """Call ``callback()`` from :meth:`wait` whenever ``fd`` is ready (e.g. a socket, a PPC's eventfd)."""
        self._callbacks[fd] = callback
        self._source(fd, SOURCE_CALLBACK)
        self._epoll.register(fd, events)

    def beat_on(self, page: Any, offset: int) -> None:
        """Keep the heartbeat, the u64 at ``offset`` of ``page``: even while waiting, odd after
        (and in :meth:`enter`)."""
        base = atomic.pointer(page)
        self._anchors.append(base)
        self._c.heartbeat = base + offset
        self._c.beats = atomic.load_acquire_u64(base, offset) & ~1

    def poll_for(self, poll_us: int) -> None:
        """Before each sleep, spin up to ``poll_us`` µs watching the notification words (and, now
        and then, the other fds without sleeping): a wake without the kernel's sleep and wake-up,
        at the price of a core kept busy that long after each handler (0: never spin)."""
        self._c.poll_ns = poll_us * 1000

    def count_progress(self, progress: Any) -> None:
        """Count wake-ups, and judge each: one whose handlers left ``progress[0]`` (a
        ``uint64_t[1]`` the PD bumps when it publishes or notifies) unchanged found no work."""
        self._progress = progress  # the C side holds a bare pointer into it
        self._c.progress = progress

    def progress(self) -> int:
        """The PD's progress count (0 without one)."""
        return self._c.progress[0] if self._c.progress else 0

    def settle(self) -> None:
        """Judge the last wake now (the next wait would): for counts read between waits."""
        atomic.lib.pd_settle(self._c)

    def wake_counts(self) -> tuple[int, int, dict[int, int]]:
        """Channels handled, those in wakes that found no work, and those per channel."""
        c = self._c
        by_channel = {ch: c.unproductive_by_channel[ch] for ch in range(64) if c.unproductive_by_channel[ch]}
        return c.wakeups, c.unproductive, by_channel

    def enter(self) -> None:
        """Mark the PD in a handler outside a wait (its init)."""
        atomic.lib.pd_enter(self._c)

    def publish_with(self, timerfd: int, period_s: float, publish: Callable[[], None]) -> None:
        """Call ``publish()`` ``period_s`` after the first wake since it last ran (so never while
        the PD sleeps on): ``timerfd`` (non-blocking; the waiter closes it) is its timer."""
        self._c.timerfd, self._c.period_ns = timerfd, int(period_s * 1e9)
        self._callbacks[timerfd] = publish
        self._source(timerfd, SOURCE_PUBLISH_TIMER)
        self._epoll.register(timerfd, select.EPOLLIN)

    def wait(self, timeout: float | None = None) -> list[int]:
        """Channels signalled since the last call (empty on timeout or spurious wake); runs the
        callbacks of the fds that were ready."""
        out = self._out
        n = pd_wait(self._c, -1 if timeout is None else int(timeout * 1000), out, MAX_EVENTS)
        if n == 1 and out[0] >= 0:
            return [out[0]]  # the common wake: one channel
        if n <= 0:
            if n < 0:
                raise OSError(-n, f"epoll_wait: {os.strerror(-n)}")
            return []
        ready = unpack(out, n)
        if min(ready) >= 0:
            return ready
        channels = []
        for entry in ready:
            if entry >= 0:
                channels.append(entry)
            else:
                self._callbacks[-entry - 1]()
        return channels

    def close(self) -> None:
        """Close the epoll set and the publish timer, and let go of the notifications (so their
        channel ends can close)."""
        self._epoll.close()
        if self._c.timerfd >= 0:
            os.close(self._c.timerfd)
            self._c.timerfd = -1
        self._c.nsources = self._c.npoll = 0
        self._c.heartbeat = atomic.NULL
        self._anchors.clear()
        self._words.clear()
