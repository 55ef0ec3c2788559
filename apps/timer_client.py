"""A timer client: runs rounds of timeouts, one pending at a time, and checks none fires early.

Each notification must come after the deadline of the timeout then pending (measured from
just before SET_TIMEOUT, so the check is sound), and every timeout must be notified (a lost
one stalls the round, which the round count shows).
"""
from __future__ import annotations

from sddf.component import Component
from sddf.timer.config import TimerClientConfig
from sddf.timer.client import set_timeout, time_now

NS_PER_MS = 1_000_000


class TimerClient(Component):
    kind = "timer.client"
    Config = TimerClientConfig

    def init(self) -> None:
        self._round = 0
        self._step = 0
        self._last_time = 0
        self._start_round()

    def _now(self) -> int:
        now = time_now(self, self.config.timer)
        if now < self._last_time:
            raise RuntimeError(f"GET_TIME went backwards: {self._last_time} then {now}")
        self._last_time = now
        return now

    def _start_round(self) -> None:
        self._round += 1
        self._step = 0
        self._arm()

    def _arm(self) -> None:
        timeout = self.config.timeouts_ns[self._step]
        self._deadline = self._now() + timeout
        set_timeout(self, self.config.timer, timeout)

    def notified(self, ch: int) -> None:
        now = self._now()
        if now < self._deadline:
            raise RuntimeError(f"timeout {self._step} of round {self._round} fired "
                               f"{(self._deadline - now) / NS_PER_MS:.3f} ms early")
        self._step += 1
        if self._step < len(self.config.timeouts_ns):
            self._arm()
            return
        self.log(f"round {self._round} complete: {self._step} timeouts, none early, "
                 f"last late by {(now - self._deadline) / NS_PER_MS:.3f} ms")
        if self.config.rounds == 0 or self._round < self.config.rounds:
            self._start_round()
