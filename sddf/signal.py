"""Notifications between components, and sDDF's signalling protocol for queue users.

A channel direction is an eventfd plus a *pending* word in memory shared by the channel's
two ends only. ``notify`` sets the word and writes the eventfd only if the word was clear,
so many notifies before the receiver runs cost one wake-up (seL4 notification semantics).
The receiver waits on all its eventfds (and device fds bound to irq channels) with epoll
and learns the set of channels that were signalled.

Protocol helpers (see sDDF's queue headers): a consumer about to sleep calls
:func:`request_and_recheck`; a producer that made progress calls :func:`signal_needed`
to decide whether to notify. Each contains the seq_cst fence the protocol requires.

A protected procedure call path (caller → callee) is a request page, a reply page and two
eventfds, like seL4's IPC buffer and endpoint: see :class:`Caller` and :class:`Callee`.
"""
from __future__ import annotations

import os
import select
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Protocol

from sddf import atomic
from sddf.shm import PAGE_SIZE, Region

WORD_SIZE = 8


class Flag(Protocol):
    def request(self) -> None: ...
    def cancel(self) -> None: ...
    def required(self) -> bool: ...
    def claim(self) -> int: ...  # seq_cst fence; then if required(): cancel() and nonzero


def request_and_recheck(flag: Flag, has_work: Callable[[], bool]) -> bool:
    """Consumer before sleeping: ask for a signal, fence, re-check. True → work appeared, go on."""
    flag.request()
    atomic.fence()
    if has_work():
        flag.cancel()
        return True
    return False


def signal_needed(flag: Flag) -> bool:
    """Producer after publishing: fence, then if the consumer asked for a signal claim it (True)."""
    return flag.claim() != 0


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


# ---- protected procedure calls ----------------------------------------------------------
# The request page is written by the caller only (the callee maps it read-only), the reply page
# by the callee only (and by the monitor, answering for a callee that died holding a call).
# A message is seL4's: a label and up to PPC_MAX_MRS 64-bit message registers.
REQUEST_SEQUENCE = 0  # u64: the caller's latest call (0: none yet)
REQUEST_MESSAGE = 8
REPLY_TAKEN = 0       # u64: the call the callee took (so the monitor knows who was in its hands)
REPLY_ANSWERED = 8    # u64: the call the reply's message answers
REPLY_MESSAGE = 16
MESSAGE_HEADER = struct.Struct("<qI4x")  # label (i64: negative labels are the framework's), count
PPC_MAX_MRS = 120  # seL4_MsgMaxLength
# by count: the whole message, and its registers alone (u64 each)
MESSAGES = [struct.Struct(f"{MESSAGE_HEADER.format}{n}Q") for n in range(PPC_MAX_MRS + 1)]
REGISTERS = [struct.Struct(f"<{n}Q") for n in range(PPC_MAX_MRS + 1)]
PPC_MALFORMED = -1  # the reply label a caller gets for a request the callee could not read
PPC_CALLEE_FAULTED = -2  # the monitor's answer to a call whose callee died while handling it


class MalformedCall(ValueError):
    """A PPC message from the other side of a call path could not be read; names the path."""


@dataclass(frozen=True)
class CallFds:
    """One call path as a PD receives it (the pages' fds are read-only where the PD must not write)."""

    request_fd: int
    reply_fd: int
    request_eventfd: int
    reply_eventfd: int


def write_message(page: memoryview, offset: int, label: int, mrs: Sequence[int], path: str) -> None:
    if len(mrs) > PPC_MAX_MRS:
        raise ValueError(f"PPC on {path}: {len(mrs)} message registers, at most {PPC_MAX_MRS}")
    try:
        MESSAGES[len(mrs)].pack_into(page, offset, label, len(mrs), *mrs)
    except struct.error as exc:
        raise ValueError(f"PPC on {path}: label must fit an i64 and message registers a u64 ({exc})") from None


def read_message(page: memoryview, offset: int, what: str) -> tuple[int, list[int]]:
    """The label and message registers the other side wrote at ``page[offset:]``, checked."""
    label, count = MESSAGE_HEADER.unpack_from(page, offset)
    if count > PPC_MAX_MRS:
        raise MalformedCall(f"{what}: {count} message registers, at most {PPC_MAX_MRS}")
    return label, list(REGISTERS[count].unpack_from(page, offset + MESSAGE_HEADER.size))


def write_reply(page: memoryview, pointer: atomic.Pointer, sequence: int, label: int, mrs: Sequence[int],
                path: str) -> None:
    """Write the answer to call ``sequence`` into a reply page and publish it."""
    write_message(page, REPLY_MESSAGE, label, mrs, path)
    atomic.store_release_u64(pointer, REPLY_ANSWERED, sequence)


class CallPath:
    """The monitor's side of one call path: creates its pages and eventfds, hands each end its
    fds, and answers for a callee that died holding a call."""

    def __init__(self, caller: str, callee: str) -> None:
        self.caller, self.callee = caller, callee
        self.name = f"{caller} -> {callee}"
        self.request = Region.create(f"ppc {self.name} request", PAGE_SIZE)
        self.reply = Region.create(f"ppc {self.name} reply", PAGE_SIZE)
        self.request_eventfd = new_eventfd()  # the callee waits on it edge-triggered, never reads it
        self.reply_eventfd = os.eventfd(0, os.EFD_CLOEXEC)  # the caller blocks reading it
        self._readonly = [self.request.readonly_fd(), self.reply.readonly_fd()]

    def caller_fds(self) -> CallFds:
        return CallFds(self.request.fd, self._readonly[1], self.request_eventfd, self.reply_eventfd)

    def callee_fds(self) -> CallFds:
        return CallFds(self._readonly[0], self.reply.fd, self.request_eventfd, self.reply_eventfd)

    def fail_taken_call(self) -> int:
        """Answer "callee faulted" to a call the (dead) callee took but did not answer; return
        its sequence number, or 0 if there was none (a call not yet taken waits for the
        restarted callee)."""
        request, reply = atomic.pointer(self.request.view), atomic.pointer(self.reply.view)
        sequence = atomic.load_acquire_u64(request, REQUEST_SEQUENCE)
        if (not sequence or atomic.load_acquire_u64(reply, REPLY_TAKEN) != sequence
                or atomic.load_acquire_u64(reply, REPLY_ANSWERED) == sequence):
            return 0
        write_reply(self.reply.view, reply, sequence, PPC_CALLEE_FAULTED, [], self.name)
        os.eventfd_write(self.reply_eventfd, 1)
        return sequence

    def close(self) -> None:
        for fd in (*self._readonly, self.request_eventfd, self.reply_eventfd):
            os.close(fd)
        self.request.close()
        self.reply.close()


class _CallEnd:
    def __init__(self, fds: CallFds, path: str, writes_request: bool) -> None:
        self.path = path
        self._request = Region.from_fd(f"{path} request", fds.request_fd, PAGE_SIZE, writes_request)
        self._reply = Region.from_fd(f"{path} reply", fds.reply_fd, PAGE_SIZE, not writes_request)
        self._request_ptr = atomic.pointer(self._request.view)
        self._reply_ptr = atomic.pointer(self._reply.view)
        self._request_eventfd, self._reply_eventfd = fds.request_eventfd, fds.reply_eventfd

    def close(self) -> None:
        """Unmap the pages and close the fds."""
        self._request_ptr = self._reply_ptr = None
        for region in (self._request, self._reply):
            region.close()
        for fd in (self._request_eventfd, self._reply_eventfd):
            os.close(fd)


class Caller(_CallEnd):
    """The calling end of a call path: :meth:`call` blocks until the callee (or the monitor) answers."""

    def __init__(self, fds: CallFds, path: str) -> None:
        super().__init__(fds, path, writes_request=True)
        # a restarted caller goes on from its previous life's numbers (the callee may hold one)
        self._sequence = atomic.load_acquire_u64(self._request_ptr, REQUEST_SEQUENCE)

    def call(self, label: int, mrs: Sequence[int]) -> tuple[int, list[int]]:
        write_message(self._request.view, REQUEST_MESSAGE, label, mrs, self.path)
        self._sequence += 1
        atomic.store_release_u64(self._request_ptr, REQUEST_SEQUENCE, self._sequence)
        os.eventfd_write(self._request_eventfd, 1)
        while True:  # a wake left over from an earlier call is not this call's answer
            os.eventfd_read(self._reply_eventfd)
            if atomic.load_acquire_u64(self._reply_ptr, REPLY_ANSWERED) == self._sequence:
                break
        return read_message(self._reply.view, REPLY_MESSAGE, f"reply on {self.path}")


class Callee(_CallEnd):
    """The called end: readable (``fileno``) when a call may be waiting; :meth:`take`, then :meth:`answer`."""

    def __init__(self, fds: CallFds, path: str) -> None:
        super().__init__(fds, path, writes_request=False)
        self._taken = 0

    def fileno(self) -> int:
        return self._request_eventfd

    def _waiting(self) -> int:
        """The sequence number of a call not taken yet, or 0."""
        sequence = atomic.load_acquire_u64(self._request_ptr, REQUEST_SEQUENCE)
        return sequence if sequence != atomic.load_acquire_u64(self._reply_ptr, REPLY_TAKEN) else 0

    def take(self) -> tuple[int, list[int]] | None:
        """The waiting call's (label, message registers), or None if there is none; raises
        :class:`MalformedCall` for one it cannot read (answer it with ``PPC_MALFORMED``).

        The request eventfd is never read: wait on it edge-triggered (each call's write is an
        edge), as for notifications. Its counter stays non-zero after the first call, so a
        restarted callee's first wait reports it ready and serves a call its predecessor had
        not taken."""
        sequence = self._waiting()
        if not sequence:
            return None
        atomic.store_release_u64(self._reply_ptr, REPLY_TAKEN, sequence)
        self._taken = sequence
        return read_message(self._request.view, REQUEST_MESSAGE, f"request on {self.path}")

    def answer(self, label: int, mrs: Sequence[int]) -> None:
        write_reply(self._reply.view, self._reply_ptr, self._taken, label, mrs, self.path)
        os.eventfd_write(self._reply_eventfd, 1)


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

    def add_irq(self, channel: int, fd: int, events: int = select.EPOLLIN) -> None:
        """A device fd as an irq: masked after it fires until :meth:`irq_ack` (Microkit semantics)."""
        self._irqs[fd] = channel
        self._epoll.register(fd, events | select.EPOLLONESHOT)

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


def drain(consumer: Any, handle: Callable[[list[tuple]], None], batch: int = 64) -> int:
    """Consume a queue until it stays empty under the signalling protocol; return entries handled.

    ``handle`` gets batches of at most ``batch`` entries. On return the consumer has requested
    a signal, so the producer's next publish will notify it.
    """
    total = 0
    while True:
        entries = consumer.dequeue_many(batch)
        if entries:
            handle(entries)
            total += len(entries)
            if len(entries) == batch:
                continue  # maybe more: take it before asking to be signalled
        if not request_and_recheck(consumer.flag, lambda: not consumer.empty()):
            return total
