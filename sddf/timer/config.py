"""Timer configs: what the timer driver and its clients are handed (built by ``Sddf.Timer``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TimerDriverConfig:
    """The timer driver: its timerfd irq channel and the channels of its clients."""

    irq: int
    clients: list[int]


@dataclass
class TimerClientConfig:
    """A timer client: the channel it calls the timer driver on (and is notified on),
    the timeouts it sets each round, and how many rounds (0: forever)."""

    timer: int
    timeouts_ns: list[int] = field(default_factory=lambda: [5_000_000, 20_000_000, 50_000_000])
    rounds: int = 0
