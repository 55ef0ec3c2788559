"""A parent PD that handles its child's faults (Microkit's fault handler), and a child that fails."""
from __future__ import annotations

from sddf.component import Component


class Parent(Component):
    """Restarts its child twice, then leaves it stopped."""

    def init(self) -> None:
        self.faults = 0

    def fault(self, child: int, reason: str) -> bool:
        self.faults += 1
        self.log(f"child {child} faulted ({reason}); fault {self.faults}")
        return self.faults <= 2


class FailingChild(Component):
    def init(self) -> None:
        raise RuntimeError(f"{self.name} fails at start")
