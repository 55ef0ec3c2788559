"""Components that count: a timer-driven ticker, and a Pong that says it runs and counts bounces."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sddf import atomic
from sddf.apps.pingpong import Pong
from sddf.component import Component
from sddf.drivers.timer.timerfd import arm_timerfd

BOUNCES_REPORTED = 1000


@dataclass
class TickerConfig:
    """The timerfd irq channel and the tick period."""

    irq: int
    period_s: float = 0.1


class Ticker(Component):
    """Increments a counter in its ``state`` region every period and prints ``<pd>: tick N``."""

    kind = "ticker"
    Config = TickerConfig

    def init(self) -> None:
        self._count = atomic.pointer(self.regions["state"])
        self._timer = self.pd.irqs[self.config.irq]
        self._arm()

    def notified(self, ch: int) -> None:
        try:
            os.read(self._timer, 8)
        except BlockingIOError:
            pass
        ticks = atomic.load_acquire_u64(self._count, 0) + 1
        atomic.store_release_u64(self._count, 0, ticks)
        self.log(f"tick {ticks}")
        self._arm()
        self.irq_ack(ch)

    def _arm(self) -> None:
        arm_timerfd(self._timer, time.monotonic_ns() + int(self.config.period_s * 1e9))


class CountingPong(Pong):
    """Pong (same kind, so it can replace it) that announces itself and its first bounces."""

    def init(self) -> None:
        self.bounced = 0
        self.log(f"CountingPong running as pid {os.getpid()}")
        super().init()

    def step(self, offset: int, value: int) -> bool:
        self.bounced += 1
        if self.bounced == BOUNCES_REPORTED:
            self.log(f"CountingPong bounced {BOUNCES_REPORTED} counters")
        return super().step(offset, value)
