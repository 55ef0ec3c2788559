"""The block driver's I/O engine: C threads (``sddf/_blkio.c``) read, write and fdatasync the image.

Python threads doing ``os.preadv`` were measured at 30–50 µs of CPU per 4 KiB request (a thread
hand-off, the GIL taken back after every system call, Python frames on the worker), several
times what the I/O costs; the C threads hand a request to a system call and back without any of
that. Each data region a request may name is registered once by index; a request names its region,
the offset in it, a length and a file offset. Results come back through :meth:`IoEngine.completions`
as ``(slot, status, transfers done)``; with threads, a result arriving when none was waiting
writes ``eventfd`` (the driver's irq). With no threads, :meth:`IoEngine.run` does the I/O at once.
"""
from __future__ import annotations

import os
from typing import Sequence

from sddf import atomic
from sddf._atomic import ffi, lib

READ, WRITE, FLUSH = lib.BLKIO_READ, lib.BLKIO_WRITE, lib.BLKIO_FLUSH
OK = lib.BLKIO_OK


class IoEngine:
    """``threads`` I/O threads (0: none, :meth:`run` only) over ``regions``, at most ``capacity``
    requests in flight; ``delay_s`` is added to every request (emulating a slower disk)."""

    def __init__(self, threads: int, capacity: int, regions: Sequence[memoryview], delay_s: float = 0.0) -> None:
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if threads else -1
        io = lib.blkio_new(threads, self.eventfd, capacity, round(delay_s * 1e9))
        if io == ffi.NULL:
            raise OSError(f"cannot start {threads} block I/O threads")
        self._io = ffi.gc(io, lib.blkio_free)
        self._pointers = [atomic.pointer(view) for view in regions]  # the threads write through these
        for i, (pointer, view) in enumerate(zip(self._pointers, regions)):
            if lib.blkio_region(self._io, i, pointer, len(view)) != 0:
                raise ValueError(f"the block I/O engine takes at most 256 data regions, not {len(regions)}")
        self._results = ffi.new("blkio_result[]", capacity)
        self._capacity = capacity

    def submit(self, slot: int, code: int, fd: int, region: int, region_offset: int, length: int,
               file_offset: int) -> None:
        """Hand a request to the threads."""
        status = lib.blkio_submit(self._io, slot, code, fd, region, region_offset, length, file_offset)
        if status != 0:
            raise RuntimeError(f"block I/O engine refused request slot {slot}: "
                               + ("more requests than its capacity" if status == -1 else "data outside its region"))

    def run(self, slot: int, code: int, fd: int, region: int, region_offset: int, length: int,
            file_offset: int) -> tuple[int, int, int]:
        """Do a request's I/O now: (slot, status, transfers done)."""
        r = lib.blkio_run(self._io, slot, code, fd, region, region_offset, length, file_offset)
        return r.slot, r.status, r.done

    def acknowledge(self) -> None:
        """The irq was taken: clear the eventfd (before :meth:`completions`, so a result arriving
        after that raises it again)."""
        try:
            os.eventfd_read(self.eventfd)
        except BlockingIOError:
            pass

    def completions(self) -> list[tuple[int, int, int]]:
        """The results finished since the last call: (slot, status, transfers done) each."""
        results = self._results
        n = lib.blkio_complete(self._io, results, self._capacity)
        return [(r.slot, r.status, r.done) for r in results[0:n]]
