"""PPC test components: a caller that calls in a loop, and a server that dies on a chosen call."""
from __future__ import annotations

import os
import time

from sddf.component import Component


class Caller(Component):
    """Calls channel 0 with an increasing number until the call fails; prints each answer."""

    def init(self) -> None:
        n = 0
        while True:  # the whole PD life is this loop; a failed call ends it as a fault
            n += 1
            label, mrs = self.ppcall(0, 7, [n])
            if n % 50 == 0 or mrs != [n + 1]:
                self.log(f"call {n} -> {label} {mrs}")


class Server(Component):
    """Answers label 7 with mr0 + 1; dies (without answering) on call number ``die_at``, or
    blocks forever in it on call number ``hang_at``."""

    def init(self) -> None:
        self.die_at = self.pd.app.get("die_at", 100)
        self.hang_at = self.pd.app.get("hang_at")

    def protected(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        if mrs[0] == self.die_at:
            os._exit(9)
        while mrs[0] == self.hang_at:
            time.sleep(3600)
        return 0, [mrs[0] + 1]
