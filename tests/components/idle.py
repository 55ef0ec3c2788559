"""A PD that does nothing by itself: a peer's place whose queue ends the test (or fuzzer) plays."""
from __future__ import annotations

from sddf.component import Component


class Idle(Component):
    kind = "test.idle"

    def notified(self, ch: int) -> None:
        pass
