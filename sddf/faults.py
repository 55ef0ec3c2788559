"""Fault injection: a PD killed just before its n-th write to shared memory, as ``kill -9`` there.

A write to shared memory is one of the C calls through which a PD changes what its peers see: a
queue move, a signal flag, a step of its ledger's commit, a notification (:data:`SHARED_WRITES`).
Everything a PD does to shared memory between two of them is invisible to its peers until the
next, so killing it before each of them in turn tries every point a ``kill -9`` could meet.
``sddf restart PD --kill-at-write N`` uses it on a running system; ``sddf.testing.Bench.kill_at``
in-process.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

from sddf import atomic

SHARED_WRITES = ("ring_put", "ring_take", "ring_advance", "ring_request_recheck", "ring_claim_signal",
                 "store_release_u32", "ledger_journal", "ledger_apply", "notify_word")


def on_shared_writes(before: Callable[[], None]) -> Callable[[], None]:
    """Call ``before`` ahead of every shared-memory write of code bound from now on (queue ends
    and channels made later bind the wrapped calls); return what undoes it."""
    originals = {name: getattr(atomic, name) for name in SHARED_WRITES}

    def wrapped(original: Callable[..., object]) -> Callable[..., object]:
        def write(*args: object) -> object:
            before()
            return original(*args)
        return write
    commit = atomic.ledger_commit

    def undo() -> None:
        for name, original in originals.items():
            setattr(atomic, name, original)
        atomic.ledger_commit = commit
    for name, original in originals.items():
        setattr(atomic, name, wrapped(original))
    atomic.ledger_commit = split_commit  # a kill may fall between the journal and its apply
    return undo


def split_commit(ledger: object) -> int:
    """A ledger's commit as its two shared writes, each through ``sddf.atomic`` (so each can be
    wrapped): the journal, then its apply."""
    n = atomic.ledger_journal(ledger)
    if n > 0:
        atomic.ledger_apply(ledger)
    return n


def kill_self_at(write: int) -> None:
    """SIGKILL this process just before its ``write``-th shared-memory write from now on."""
    left = [write]

    def count() -> None:
        left[0] -= 1
        if left[0] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
    on_shared_writes(count)
