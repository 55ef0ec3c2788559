"""Host devices that back irq channels, opened by the monitor and passed to their driver PD."""
from __future__ import annotations

import ctypes
import os
import time

CLOCK_MONOTONIC = time.CLOCK_MONOTONIC
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class DeviceError(Exception):
    """A device named by an irq source could not be opened; says which and what to do."""


def _timerfd() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
    if fd < 0:
        raise DeviceError(f"timerfd_create failed: {os.strerror(ctypes.get_errno())}")
    return fd


OPENERS = {"timerfd": _timerfd}


def open_device(source: str) -> int:
    """Open the host device an irq ``source`` names ("timerfd", …) and return its fd."""
    kind, _, _arg = source.partition(":")
    opener = OPENERS.get(kind)
    if opener is None:
        raise DeviceError(f"irq source {source!r}: unknown device kind {kind!r} "
                          f"(known: {', '.join(sorted(OPENERS))})")
    return opener()
