"""Shared memory regions: memfd + fd passing (default) or posix_ipc named memory (portable).

A :class:`Region` is created once by its owner and attached by others, either from an fd
inherited with ``pass_fds`` (memfd backend) or by name (posix backend, for processes we did
not start). Read-only attachments are mapped ``PROT_READ`` from a read-only fd, so writing
through them faults. Named regions carry the ``sddf-`` prefix and are removed on close and,
through a reaper process, even when their creator is killed.
"""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
from typing import Literal

import posix_ipc

PAGE_SIZE = mmap.PAGESIZE
NAME_PREFIX = "sddf-"
Backend = Literal["memfd", "posix"]


class RegionError(Exception):
    """A region could not be created or attached; the message names the region."""


def round_to_pages(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


class Region:
    """A mapped shared memory region; ``view`` is a memoryview over all of it."""

    def __init__(self, name: str, fd: int, size: int, writable: bool,
                 posix_name: str | None = None, owner: bool = False) -> None:
        self.name = name
        self.fd = fd
        self.size = size
        self.writable = writable
        self.posix_name = posix_name
        self._owner = owner
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            self.mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        except (OSError, ValueError) as exc:
            raise RegionError(f"region {name!r}: cannot map {size} bytes "
                              f"{'rw' if writable else 'r'}: {exc}") from exc
        self.view = memoryview(self.mmap)
        if not writable:
            self.view = self.view.toreadonly()

    # ---- creation -------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, size: int, backend: Backend = "memfd") -> "Region":
        """Create a zero-filled region of ``size`` bytes (a whole number of pages)."""
        if size <= 0 or size % PAGE_SIZE:
            raise RegionError(f"region {name!r}: size {size:#x} is not a positive multiple "
                              f"of the page size {PAGE_SIZE:#x}")
        if backend == "memfd":
            fd = os.memfd_create(f"sddf:{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, size)
            # owner read-only: a PD holding a read-only fd cannot reopen it for writing through
            # /proc (unless it is root, which bypasses file modes)
            os.fchmod(fd, 0o400)
            return cls(name, fd, size, True, owner=True)
        if backend == "posix":
            posix_name = "/" + NAME_PREFIX + f"{os.getpid()}-{name}"
            try:
                shm = posix_ipc.SharedMemory(posix_name, posix_ipc.O_CREX, mode=0o600, size=size)
            except posix_ipc.ExistentialError as exc:
                raise RegionError(f"region {name!r}: {posix_name} already exists") from exc
            except ValueError as exc:  # posix_ipc's "Invalid parameter(s)"
                raise RegionError(f"region {name!r}: {posix_name!r} is not a valid POSIX shared memory "
                                  f"name (no '/' after the first, at most 255 bytes)") from exc
            _reaper().watch(posix_name)
            fd = os.dup(shm.fd)
            shm.close_fd()
            os.set_inheritable(fd, False)
            return cls(name, fd, size, True, posix_name=posix_name, owner=True)
        raise RegionError(f"region {name!r}: unknown backend {backend!r}")

    # ---- attaching ------------------------------------------------------------------
    @classmethod
    def from_fd(cls, name: str, fd: int, size: int, writable: bool) -> "Region":
        """Attach a region whose fd this process inherited."""
        return cls(name, fd, size, writable)

    @classmethod
    def open_named(cls, posix_name: str, writable: bool = True) -> "Region":
        """Attach a posix-backend region by its ``/sddf-…`` name."""
        try:
            shm = posix_ipc.SharedMemory(posix_name, 0, read_only=not writable)
        except posix_ipc.ExistentialError as exc:
            raise RegionError(f"region {posix_name!r} does not exist") from exc
        fd, size = os.dup(shm.fd), shm.size
        shm.close_fd()
        os.set_inheritable(fd, False)
        return cls(posix_name, fd, size, writable)

    def readonly_fd(self) -> int:
        """A new fd opened read-only on the same memory, for a ``perms="r"`` map."""
        if self.posix_name is not None:
            shm = posix_ipc.SharedMemory(self.posix_name, 0, read_only=True)
            fd = os.dup(shm.fd)
            shm.close_fd()
        else:
            fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        os.set_inheritable(fd, False)
        return fd

    def close(self) -> None:
        """Unmap, close the fd and, if this process created a named region, unlink it."""
        if self.mmap.closed:
            return
        try:
            self.view.release()
            self.mmap.close()
        except BufferError as exc:
            raise RegionError(f"region {self.name!r}: still in use by a view: {exc}") from exc
        os.close(self.fd)
        if self._owner and self.posix_name is not None:
            try:
                posix_ipc.unlink_shared_memory(self.posix_name)
            except posix_ipc.ExistentialError:
                pass
            _reaper().forget(self.posix_name)

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Region({self.name!r}, size={self.size:#x}, {'rw' if self.writable else 'r'})"


class _Reaper:
    """A detached helper that unlinks this process's named regions when it dies, however it dies."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sddf._shm_reaper"], stdin=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin

    def _send(self, line: str) -> None:
        self._pipe.write(line.encode() + b"\n")
        self._pipe.flush()

    def watch(self, posix_name: str) -> None:
        self._send("+" + posix_name)

    def forget(self, posix_name: str) -> None:
        self._send("-" + posix_name)


_REAPER: _Reaper | None = None
_REAPER_PID = 0


def _reaper() -> _Reaper:
    global _REAPER, _REAPER_PID
    if _REAPER is None or _REAPER_PID != os.getpid():
        _REAPER, _REAPER_PID = _Reaper(), os.getpid()
    return _REAPER
