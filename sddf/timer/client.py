"""sDDF's timer protocol (over PPC) and the client calls (like include/sddf/timer/client.h)."""
from __future__ import annotations

from typing import Protocol

GET_TIME = 0      # reply mr0: ns on the monotonic clock
SET_TIMEOUT = 1   # mr0: relative timeout in ns; the client is notified when it passes
REPLY_OK = 0
REPLY_ERROR = 1


class Caller(Protocol):
    def ppcall(self, ch: int, label: int, mrs: list[int] | tuple[int, ...] = ()) -> tuple[int, list[int]]: ...


class TimerError(Exception):
    """The timer driver refused a request."""


def time_now(component: Caller, ch: int) -> int:
    """Nanoseconds on the driver's monotonic clock."""
    label, mrs = component.ppcall(ch, GET_TIME)
    if label != REPLY_OK or len(mrs) != 1:
        raise TimerError(f"GET_TIME on channel {ch} failed (label {label})")
    return mrs[0]


def set_timeout(component: Caller, ch: int, ns: int) -> None:
    """Ask to be notified on ``ch`` once ``ns`` nanoseconds have passed."""
    label, _ = component.ppcall(ch, SET_TIMEOUT, [ns])
    if label != REPLY_OK:
        raise TimerError(f"SET_TIMEOUT({ns}) on channel {ch} failed (label {label})")
