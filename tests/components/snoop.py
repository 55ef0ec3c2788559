"""Snoop: a PD that, once past init, tries everything a confined PD must not do and says how each went.

Each attempt is logged as ``<pd>: <what>: refused (<error>)`` or ``<pd>: <what>: SUCCEEDED``,
then ``<pd>: done``. With ``hog_bytes`` set it instead allocates that much private memory.
"""
from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from sddf.component import Component
from sddf.drivers.timer.timerfd import arm_timerfd

PTRACE_ATTACH = 16
_libc = ctypes.CDLL(None, use_errno=True)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


@dataclass
class SnoopConfig:
    irq: int
    hog_bytes: int = 0


def _syscall(name: str, result: int) -> None:
    """Raise what a failed libc call set errno to."""
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


class Snoop(Component):
    Config = SnoopConfig

    def init(self) -> None:
        arm_timerfd(self.pd.irqs[self.config.irq], time.monotonic_ns() + 10_000_000)  # acts after init

    def notified(self, ch: int) -> None:
        if self.config.hog_bytes:
            self.hog = bytearray(self.config.hog_bytes)  # a MemoryError beyond the PD's cap
            self.log("hogged")
            return
        monitor = os.getppid()
        readonly = next(g.fd for g in self.pd.regions.values() if not g.writable)
        attempts: dict[str, Callable[[], object]] = {
            "reopen a read-only region for writing": lambda: os.open(f"/proc/self/fd/{readonly}", os.O_RDWR),
            "read the monitor's memory file": lambda: os.open(f"/proc/{monitor}/mem", os.O_RDONLY),
            "read the monitor's memory directly": lambda: self._vm_read(monitor),
            "trace the monitor": lambda: _syscall("ptrace", _libc.ptrace(PTRACE_ATTACH, monitor, None, None)),
            "open a file": lambda: os.open("/etc/hostname", os.O_RDONLY),
            "open a socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            "run a program": lambda: subprocess.run(["true"], check=True),
        }
        for what, attempt in attempts.items():
            try:
                attempt()
            except OSError as exc:
                self.log(f"{what}: refused ({type(exc).__name__}: {exc.strerror})")
            else:
                self.log(f"{what}: SUCCEEDED")
        self.log("done")

    @staticmethod
    def _vm_read(pid: int) -> None:
        buf = ctypes.create_string_buffer(8)
        local, remote = _IoVec(ctypes.addressof(buf), 8), _IoVec(0x400000, 8)
        _syscall("process_vm_readv", _libc.process_vm_readv(pid, ctypes.byref(local), 1,
                                                            ctypes.byref(remote), 1, 0))
