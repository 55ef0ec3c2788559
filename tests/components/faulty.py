"""Faulty: a component that does one wrong thing on demand (SIGUSR1) or at every boot.

It counts its boots in its ``state`` region and prints ``<pd>: boot N pid P``, so a test sees
both that it runs and that its region survived a restart. Actions (``config.action``):
``raise``, ``exit:N`` (``os._exit(N)``), ``peek:MAP`` (ask for a region by map name),
``write:MAP`` (write through the map's memoryview), ``store:MAP`` (a raw atomic store
through the mapping), ``orphan:S`` (start ``sleep S`` inheriting every fd, then raise),
``spin`` (loop forever: a handler that never returns), ``idle`` (nothing).
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

from sddf import atomic
from sddf.component import Component


@dataclass
class FaultyConfig:
    """What to do, when (at each boot, or on SIGUSR1), and whether to shrug off SIGTERM."""

    action: str = "raise"
    at_init: bool = False
    ignore_sigterm: bool = False


class Faulty(Component):
    """Counts its boots in its ``state`` region, then misbehaves as configured."""

    Config = FaultyConfig

    def init(self) -> None:
        state = atomic.pointer(self.regions["state"])
        boot = atomic.load_acquire_u64(state, 0) + 1
        atomic.store_release_u64(state, 0, boot)
        if self.config.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not self.config.at_init:
            signal.signal(signal.SIGUSR1, lambda *_: self.act())
        self.log(f"boot {boot} pid {os.getpid()}")
        if self.config.at_init:
            self.act()

    def notified(self, ch: int) -> None:
        pass

    def act(self) -> None:
        what, _, arg = self.config.action.partition(":")
        if what == "orphan":
            child = subprocess.Popen(["sleep", arg], close_fds=False)
            # os.write, not print: this may run in a signal handler that interrupted a print
            os.write(1, f"{self.name}: left child {child.pid}\n".encode())
        while what == "spin":
            pass
        if what in ("raise", "orphan"):
            raise RuntimeError(f"{self.name} fails on purpose")
        if what == "exit":
            os._exit(int(arg))
        if what == "peek":
            self.regions[arg]
        elif what == "write":
            self.regions[arg][0] = 1
        elif what == "store":
            atomic.store_release_u8(atomic.pointer(self.regions[arg]), 0, 1)
        elif what != "idle":
            raise ValueError(f"{self.name}: unknown action {self.config.action!r}")
