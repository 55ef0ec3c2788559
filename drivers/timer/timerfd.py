"""Timer driver: sDDF's timer protocol over PPC, backed by a host timerfd (its irq channel).

Like sDDF's timer drivers it keeps one pending timeout per client: a SET_TIMEOUT replaces the
client's previous one, so no client can grow the driver's state. When a client's timeout
passes the client is notified on its channel. Each client's deadline is a word of the driver's
ledger, so a restarted driver still wakes every client that was waiting (a client whose timeout
passed as the driver died may be woken twice, never not at all).
"""
from __future__ import annotations

import ctypes
import os
import time

from sddf.component import Component
from sddf.timer.config import TimerDriverConfig
from sddf.timer.client import GET_TIME, REPLY_ERROR, REPLY_OK, SET_TIMEOUT

TFD_TIMER_ABSTIME = 1
NS_PER_S = 1_000_000_000
MAX_TIMEOUT_NS = 10 * 365 * 24 * 3600 * NS_PER_S


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)


def arm_timerfd(fd: int, deadline_ns: int) -> None:
    """Make ``fd`` fire at absolute monotonic time ``deadline_ns`` (0 disarms)."""
    spec = _Itimerspec(_Timespec(0, 0), _Timespec(*divmod(deadline_ns, NS_PER_S)))
    if _libc.timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        raise OSError(ctypes.get_errno(), f"timerfd_settime: {os.strerror(ctypes.get_errno())}")


class TimerDriver(Component):
    """Answers GET_TIME / SET_TIMEOUT calls and notifies each client when its timeout passes."""

    kind = "timer.driver"
    Config = TimerDriverConfig

    def init(self) -> None:
        self._fd = self.device(self.config.irq)
        self._word = {ch: i for i, ch in enumerate(self.config.clients)}  # client channel -> its word
        self.ledger.require(len(self._word), "one per client")
        deadlines = self.ledger.words
        # client channel -> its one deadline (ns, monotonic); after a restart, what was pending
        self._pending = {ch: deadlines[i] for ch, i in self._word.items() if deadlines[i]}
        self._armed = 0
        self._rearm()

    def protected(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        if ch not in self._word:
            return REPLY_ERROR, []
        now = time.monotonic_ns()
        if label == GET_TIME:
            return REPLY_OK, [now]
        if label == SET_TIMEOUT and len(mrs) == 1 and 0 <= mrs[0] <= MAX_TIMEOUT_NS:
            self._pending[ch] = now + mrs[0]
            self.ledger.set(self._word[ch], now + mrs[0])
            self._rearm()
            return REPLY_OK, []
        return REPLY_ERROR, []

    def notified(self, ch: int) -> None:
        if ch != self.config.irq:
            return  # clients only call; a stray notification carries no request
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        now = time.monotonic_ns()
        for client, deadline in list(self._pending.items()):
            if deadline <= now:
                del self._pending[client]
                self.notify(client)
                self.ledger.set(self._word[client], 0)  # after the notify: a kill in between wakes it twice
        self._armed = 0
        self._rearm()
        self.irq_ack(ch)

    def _rearm(self) -> None:
        earliest = min(self._pending.values(), default=0)
        if earliest != self._armed:
            arm_timerfd(self._fd, earliest)
            self._armed = earliest
