"""The simulator's seeded scheduler: one random stream, a virtual clock, timed events and a trace.

Everything that happens in a simulation is an :class:`Event` due at a virtual time: a
notification's delivery, a device's irq, a frame arriving, a fault, a restart. The earliest runs
next (ties in the order they were made); its delay was drawn from the seed's one random stream
when it was scheduled, so a seed fixes the order of everything. *Background* events are the
world acting on the system (traffic, faults, timer expiries); the system is *quiescent* when
only they are left. The trace records every event with the step and virtual time; its digest
identifies a run (same seed, same options → same digest).
"""
from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

START_NS = 1_000_000_000_000  # the virtual clock's reading at the start (a machine up for a while)


@dataclass(order=True)
class Event:
    """``action``, due at virtual time ``due`` (ns); ``label`` is its line in the trace."""

    due: int
    seq: int
    label: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)
    background: bool = field(compare=False, default=False)
    done: bool = field(compare=False, default=False)  # it ran, or was cancelled


class Scheduler:
    """The event queue, the clock (ns) and the trace of one seeded run."""

    def __init__(self, seed: int, keep: int) -> None:
        self.rng = random.Random(seed)
        self.now = START_NS
        self.step = 0
        self._queue: list[Event] = []
        self._seq = 0
        self._work = 0  # queued events that are not background
        self.tail: deque[str] = deque(maxlen=keep)
        self._digest = hashlib.sha256()

    # ---- events -----------------------------------------------------------------------------
    def at(self, delay: int, label: str, action: Callable[[], None], background: bool = False) -> Event:
        """Schedule ``action`` ``delay`` ns from now."""
        self._seq += 1
        event = Event(self.now + max(0, delay), self._seq, label, action, background)
        heapq.heappush(self._queue, event)
        self._work += not background
        return event

    def cancel(self, event: Event) -> None:
        if not event.done:
            event.done = True
            self._work -= not event.background

    def pop(self) -> Event | None:
        """The next event (the clock moves to its time), or None if there is none."""
        while self._queue:
            event = heapq.heappop(self._queue)
            if not event.done:
                self._work -= not event.background
                event.done = True
                self.now = max(self.now, event.due)
                return event
        return None

    def take(self, event: Event) -> None:
        """Run ``event`` now, ahead of its turn (a preemption): the clock moves to its time."""
        self.cancel(event)
        self.now = max(self.now, event.due)

    @property
    def quiescent(self) -> bool:
        """Nothing but background events queued."""
        return self._work == 0

    # ---- randomness ---------------------------------------------------------------------------
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def delay(self) -> int:
        """A notification's or an irq's latency (ns): usually a few µs, sometimes much longer."""
        if self.rng.random() < 0.8:
            return self.rng.randrange(1_000, 20_000)
        return self.rng.randrange(20_000, 500_000)

    # ---- the trace ----------------------------------------------------------------------------
    def log(self, text: str) -> None:
        line = f"{self.step:>7} {(self.now - START_NS) / 1000:>12.3f}us  {text}"
        self.tail.append(line)
        self._digest.update(line.encode() + b"\n")

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()
