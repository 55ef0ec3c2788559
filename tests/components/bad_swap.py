"""Swap candidates of pong's kind that go wrong: one fails in init()."""
from __future__ import annotations

from sddf.apps.pingpong import Pong


class FailingPong(Pong):
    """Pong's kind, but its init raises."""

    def init(self) -> None:
        raise RuntimeError("FailingPong fails in init on purpose")
