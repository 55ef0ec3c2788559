"""The PPC call path on its own (no processes): request and reply pages, sequence numbers, and
what happens when either side restarts, dies holding a call, or writes garbage."""
from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from sddf import atomic
from sddf.shm import PAGE_SIZE, Region, RegionError
from sddf.channel import Waiter
from sddf.ppc import (CallFds, CallPath, Callee, Caller, MESSAGES, MalformedCall, PPC_CALLEE_FAULTED, PPC_MAX_MRS, REPLY_ANSWERED, REPLY_MESSAGE, REQUEST_MESSAGE, REQUEST_SEQUENCE)

ANSWER_S = 5.0


def dup(fds: CallFds) -> CallFds:
    """The fds a fresh process would get for the same end (each end object closes its own)."""
    return CallFds(*(os.dup(fd) for fd in (fds.request_fd, fds.reply_fd, fds.request_eventfd, fds.reply_eventfd)))


@pytest.fixture
def path() -> Iterator[CallPath]:
    p = CallPath("caller", "callee")
    yield p
    p.close()


class Calling:
    """A call made from a thread (a call blocks until answered); ``result()`` waits for its answer."""

    def __init__(self, caller: Caller, label: int, mrs: Sequence[int]) -> None:
        self.answer: tuple[int, list[int]] | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(caller, label, mrs), daemon=True)
        self._thread.start()

    def _run(self, caller: Caller, label: int, mrs: Sequence[int]) -> None:
        try:
            self.answer = caller.call(label, mrs)
        except BaseException as exc:  # handed to the test
            self.answer = exc

    def result(self, timeout: float = ANSWER_S) -> tuple[int, list[int]] | BaseException:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call was never answered"
        assert self.answer is not None
        return self.answer

    def unanswered_after(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return self._thread.is_alive()


def take_one(callee: Callee) -> tuple[int, list[int]]:
    """Wait (edge-triggered, like a component) for a call and take it."""
    waiter = Waiter()
    taken: list[tuple[int, list[int]]] = []

    def take() -> None:
        request = callee.take()
        if request is not None:
            taken.append(request)

    waiter.add_callback(callee.fileno(), take, select.EPOLLIN | select.EPOLLET)
    deadline = time.monotonic() + ANSWER_S
    try:
        while not taken and time.monotonic() < deadline:
            waiter.wait(ANSWER_S)
    finally:
        waiter.close()
    assert taken, "no call came"
    return taken[0]


def serve_one(callee: Callee, answer: tuple[int, list[int]] | None = None) -> tuple[int, list[int]]:
    """Take a call, answer it (default: echo) and return it."""
    request = take_one(callee)
    callee.answer(*(answer or request))
    return request


def test_a_call_gets_its_answer(path: CallPath) -> None:
    caller, callee = Caller(dup(path.caller_fds()), "p"), Callee(dup(path.callee_fds()), "p")
    for n in range(1, 20):
        call = Calling(caller, n, list(range(n)))
        assert serve_one(callee, (n * 10, [n] * n)) == (n, list(range(n)))
        assert call.result() == (n * 10, [n] * n)


def test_a_call_with_the_most_registers_and_the_largest_words(path: CallPath) -> None:
    caller, callee = Caller(dup(path.caller_fds()), "p"), Callee(dup(path.callee_fds()), "p")
    mrs = [2**64 - 1 - i for i in range(PPC_MAX_MRS)]
    call = Calling(caller, -(2**63), mrs)
    assert serve_one(callee) == (-(2**63), mrs)
    assert call.result() == (-(2**63), mrs)


@pytest.mark.parametrize("mrs, says", [([0] * (PPC_MAX_MRS + 1), "at most 120"), ([-1], "u64"), ([2**64], "u64")])
def test_a_message_that_does_not_fit_is_refused_naming_the_path(path: CallPath, mrs: list[int], says: str) -> None:
    caller = Caller(dup(path.caller_fds()), "channel 3 (a <-> b)")
    with pytest.raises(ValueError, match=rf"channel 3 \(a <-> b\).*{says}"):
        caller.call(1, mrs)


def test_a_stale_wake_is_not_taken_for_the_answer(path: CallPath) -> None:
    caller, callee = Caller(dup(path.caller_fds()), "p"), Callee(dup(path.callee_fds()), "p")
    call = Calling(caller, 1, [1])
    serve_one(callee)
    assert call.result() == (1, [1])
    os.eventfd_write(path.reply_eventfd, 1)  # e.g. left by an earlier life of the caller
    call = Calling(caller, 2, [2])
    assert call.unanswered_after(0.2), "the caller took the previous call's reply for its own"
    serve_one(callee)
    assert call.result() == (2, [2])


def test_a_restarted_caller_goes_on_numbering_its_calls(path: CallPath) -> None:
    callee = Callee(dup(path.callee_fds()), "p")
    first = Caller(dup(path.caller_fds()), "p")
    call = Calling(first, 1, [1])
    serve_one(callee)
    call.result()
    first.close()
    again = Caller(dup(path.caller_fds()), "p")  # numbering from 1 again, its call would look taken
    call = Calling(again, 7, [7])
    assert serve_one(callee) == (7, [7])
    assert call.result() == (7, [7])


def test_a_call_the_dead_callee_had_not_taken_is_served_by_the_next(path: CallPath) -> None:
    dead = Callee(dup(path.callee_fds()), "p")
    caller = Caller(dup(path.caller_fds()), "p")
    call = Calling(caller, 5, [5])
    assert call.unanswered_after(0.1)
    dead.close()  # died before taking it
    assert path.fail_taken_call() == 0, "the monitor failed a call nobody had taken"
    fresh = Callee(dup(path.callee_fds()), "p")
    assert serve_one(fresh) == (5, [5])
    assert call.result() == (5, [5])


def test_the_monitor_answers_a_call_the_dead_callee_held(path: CallPath) -> None:
    callee, caller = Callee(dup(path.callee_fds()), "p"), Caller(dup(path.caller_fds()), "p")
    call = Calling(caller, 5, [5])
    assert take_one(callee) == (5, [5])
    callee.close()  # dies holding it
    assert path.fail_taken_call() != 0
    assert call.result() == (PPC_CALLEE_FAULTED, [])
    assert path.fail_taken_call() == 0, "an answered call was failed again"
    # the next callee does not serve the failed call again
    fresh = Callee(dup(path.callee_fds()), "p")
    assert fresh.take() is None


def test_garbage_from_the_caller_is_refused_naming_the_path(path: CallPath) -> None:
    callee = Callee(dup(path.callee_fds()), "channel 1 (a <-> b)")
    request = path.request.view  # the monitor's rw map: write what a broken caller would
    MESSAGES[0].pack_into(request, REQUEST_MESSAGE, 9, 0xFFFF_FFFF)  # a register count far past the page
    atomic.store_release_u64(atomic.pointer(request), REQUEST_SEQUENCE, 1)
    with pytest.raises(MalformedCall, match=r"request on channel 1 \(a <-> b\).*4294967295 message registers"):
        callee.take()


def test_garbage_from_the_callee_is_refused_naming_the_path(path: CallPath) -> None:
    caller = Caller(dup(path.caller_fds()), "channel 1 (a <-> b)")
    call = Calling(caller, 1, [])
    assert call.unanswered_after(0.1)
    reply = path.reply.view
    MESSAGES[0].pack_into(reply, REPLY_MESSAGE, 0, PPC_MAX_MRS + 1)
    atomic.store_release_u64(atomic.pointer(reply), REPLY_ANSWERED, 1)
    os.eventfd_write(path.reply_eventfd, 1)
    answer = call.result()
    assert isinstance(answer, MalformedCall) and "reply on channel 1 (a <-> b)" in str(answer)


def test_neither_end_can_write_the_other_ends_page(path: CallPath) -> None:
    for fd, page in ((path.caller_fds().reply_fd, "reply"), (path.callee_fds().request_fd, "request")):
        with pytest.raises(RegionError, match="cannot map"):
            Region.from_fd(page, os.dup(fd), PAGE_SIZE, True)
