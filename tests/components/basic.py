"""The smallest components: one that does nothing, and things that are not components."""
from __future__ import annotations

from sddf.component import Component


class Thing(Component):
    """A valid program that ignores every notification."""

    def notified(self, ch: int) -> None:
        pass


class NotAComponent:
    """A class that a PD's program must not name: it is not a Component subclass."""


def not_a_class() -> None:
    """A function that a PD's program must not name either."""
