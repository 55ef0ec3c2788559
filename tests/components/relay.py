"""Bench test components: a relay that passes a count along a chain, and a server it may call."""
from __future__ import annotations

from sddf.component import Component


class Relay(Component):
    """Notified on ``inbound``, counts, and notifies ``outbound`` (deferred if ``deferred``);
    with ``server`` set it first asks that PD (by PPC) to double its count."""

    def init(self) -> None:
        self.seen = 0

    def notified(self, ch: int) -> None:
        app = self.pd.app
        self.seen += 1
        self.counters["seen"] += 1
        if "server" in app:
            self.seen = self.ppcall(app["server"], 1, [self.seen])[1][0]
        if "outbound" in app:
            (self.deferred_notify if app.get("deferred") else self.notify)(app["outbound"])


class Doubler(Component):
    """Answers a call with twice its first register, and notifies ``told`` (deferred) each time."""

    def protected(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        self.deferred_notify(self.pd.app["told"])
        return 0, [2 * mrs[0]]
