"""Protected procedure calls (Microkit's ``ppcall``/``protected``).

A call path (caller → callee) is a request page, a reply page and two eventfds, like seL4's
IPC buffer and endpoint: see :class:`Caller` and :class:`Callee`; the monitor owns
:class:`CallPath` and answers for a callee that died holding a call.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sddf import atomic
from sddf.channel import new_eventfd
from sddf.shm import PAGE_SIZE, Region

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
