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


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


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
    """The receiving side of one channel direction."""

    def __init__(self, eventfd: int, words: Any, offset: int) -> None:
        self.eventfd = eventfd
        self._ptr = atomic.pointer(words)
        self._offset = offset
        #: Claim the pending word (one C call): nonzero if a notify was pending.
        #: The eventfd is never read: waiters watch it edge-triggered, and every notifier write
        #: (made only when the word was clear) is a new edge. The counter only grows; it would
        #: take 2**64 - 2 notifies to fill it.
        self.consume: Callable[[], int] = partial(atomic.exchange_u64, self._ptr, offset, 0)

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
    """Blocks until channels are notified or irq fds are ready; returns the channel ids."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._notifications: dict[int, tuple[int, Callable[[], int]]] = {}  # fd -> (channel, its consume)
        self._irqs: dict[int, int] = {}
        self._callbacks: dict[int, Callable[[], None]] = {}

    def add_notification(self, channel: int, notification: Notification) -> None:
        self._notifications[notification.fileno()] = (channel, notification.consume)
        self._epoll.register(notification.fileno(), select.EPOLLIN | select.EPOLLET)

    def add_irq(self, channel: int, fd: int, events: int = select.EPOLLIN) -> bool:
        """A device fd as an irq: masked after it fires until :meth:`irq_ack` (Microkit semantics).
        Returns False for a device that cannot signal (a regular file or a block device, which
        epoll refuses): it is never ready, and raises no irq."""
        try:
            self._epoll.register(fd, events | select.EPOLLONESHOT)
        except PermissionError:
            return False
        self._irqs[fd] = channel
        return True

    def irq_ack(self, fd: int, events: int = select.EPOLLIN) -> None:
        self._epoll.modify(fd, events | select.EPOLLONESHOT)

    def add_callback(self, fd: int, callback: Callable[[], None], events: int = select.EPOLLIN) -> None:
        """Call ``callback()`` from :meth:`wait` whenever ``fd`` is ready (e.g. a socket, a PPC's eventfd)."""
        self._callbacks[fd] = callback
        self._epoll.register(fd, events)

    def wait(self, timeout: float | None = None) -> list[int]:
        """Channels signalled since the last call (empty on timeout or spurious wake)."""
        ready = []
        notifications = self._notifications
        for fd, _events in self._epoll.poll(-1 if timeout is None else timeout):
            entry = notifications.get(fd)
            if entry is None:
                callback = self._callbacks.get(fd)
                if callback is not None:
                    callback()
                else:
                    ready.append(self._irqs[fd])
            elif entry[1]():
                ready.append(entry[0])
        return ready

    def close(self) -> None:
        self._epoll.close()
