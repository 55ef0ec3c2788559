"""Shared memory (and other things holding views of it) that live for one test."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import pytest

from sddf.shm import Region


class Resources:
    """What one test opened, to be closed after it, newest first."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], None]] = []

    def on_close(self, close: Callable[[], None]) -> None:
        self._closers.append(close)

    def region(self, name: str, size: int) -> Region:
        """A new memfd region of ``size`` bytes."""
        region = Region.create(name, size)
        self.on_close(region.close)
        return region

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@contextmanager
def scoped_resources(request: pytest.FixtureRequest) -> Iterator[Resources]:
    """Resources closed after the test unless it failed: use it in a fixture.

    A failed test's traceback keeps its frames alive, and so the queue handles, waiters and
    views in them; closing regions under them would only add "still in use" errors to the
    failure. The process's exit reclaims them instead.
    """
    failed_before = request.session.testsfailed
    resources = Resources()
    yield resources
    if request.session.testsfailed == failed_before:
        resources.close()
