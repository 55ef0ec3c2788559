"""Worker side: attach inherited regions, and a channel to the peer with stall detection."""
from __future__ import annotations

import random
import time
from typing import Any, Callable

from sddf.shm import Region
from sddf.channel import ChannelEnd, ChannelEndFds, Waiter

MAX_PAUSE_S = 200e-6


class Stalled(Exception):
    """A worker waited past its deadline: a lost wake-up (or a dead peer)."""


def attach(params: dict[str, Any], key: str) -> Region:
    """The writable region the parent passed as ``params[key]`` (see :func:`xproc.procs.region_param`)."""
    return Region.from_fd(key, params[key]["fd"], params[key]["size"], True)


class Watchdog:
    """Every ``segment`` items must be done within ``timeout_s`` of the previous segment's end."""

    def __init__(self, segment: int, timeout_s: float) -> None:
        self.segment = segment
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.slowest_s = 0.0

    def count(self, before: int, after: int) -> None:
        """``after - before`` items were done; start the next segment's clock if one ended."""
        if before // self.segment != after // self.segment:
            now = time.monotonic()
            self.slowest_s = max(self.slowest_s, now - self.started)
            self.started, self.deadline = now, now + self.timeout_s


class Link:
    """This worker's end of the channel to its peer: notify it, or block until it notifies us."""

    def __init__(self, fds: dict[str, int]) -> None:
        self.end = ChannelEnd.attach(ChannelEndFds(**fds))
        self.waiter = Waiter()
        self.waiter.add_notification(0, self.end.notification)
        self.sleeps = 0

    def notify(self) -> None:
        self.end.notify()

    def sleep(self, watchdog: Watchdog, stalled: Callable[[], str]) -> None:
        """Block until notified; raise :class:`Stalled` with ``stalled()`` if the deadline comes first.

        Waking at the deadline is a failure even if work is waiting then: that is a lost wake-up
        that the timeout covered up."""
        remaining = watchdog.deadline - time.monotonic()
        if remaining > 0:
            self.sleeps += 1
            self.waiter.wait(remaining)
        if time.monotonic() >= watchdog.deadline:
            raise Stalled(stalled())


def pauser(rng: random.Random, probability: float) -> Callable[[], None]:
    """A hook that sleeps 0-200 µs with ``probability`` each time it is called (a no-op at 0)."""
    if not probability:
        return lambda: None

    def pause() -> None:
        if rng.random() < probability:
            time.sleep(rng.uniform(0, MAX_PAUSE_S))

    return pause
