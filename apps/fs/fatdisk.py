"""FatFs's disk for the FAT server: sectors of the partition served from its :class:`BlockCache`.

FatFs (the cffi build ``sddf.fs._fatfs``, see sddf/fs/_fatfs_build.py) calls ``disk_read`` and
``disk_write``; they call back into :func:`fatfs_disk_read`/:func:`fatfs_disk_write` here, which hand the
sectors of drive 0 to the :class:`FatDisk` registered in :data:`DISKS` (a server restarted in one
process takes the drive over from its predecessor). Sectors move with ``ffi.memmove``: no per-byte
work in Python. A callback may wait for block responses, so FatFs must be called on a cothread.

Nothing may escape a callback into FatFs: :class:`FatDisk` catches every failure, answers the
call (and every later one until :meth:`FatDisk.reset`) with RES_ERROR, and keeps what went wrong
for the volume to act on after the FatFs call returns.
"""
from __future__ import annotations

from typing import Any, Callable

from sddf.apps.fs.blockcache import SECTOR, BlockCache, BlockIoError
from sddf.fs._fatfs import ffi

#: the drives FatFs may call for (the FAT server registers its disk as drive 0)
DISKS: dict[int, FatDisk] = {}
RES_OK, RES_ERROR = 0, 1


class FatDisk:
    """One drive's sectors, from ``cache``; see the module docstring."""

    def __init__(self, cache: BlockCache, log: Callable[[str], None]) -> None:
        self._cache = cache
        self._log = log
        #: a block transfer failed since the last reset: every call answers RES_ERROR
        self.failed = False
        self.bug: BaseException | None = None  # a failure that is no I/O error (raised after the call)

    def reset(self) -> None:
        self.failed = False

    def read(self, into: Any, sector: int, count: int) -> int:
        """``count`` sectors from ``sector`` into FatFs's buffer ``into``."""
        if not self.failed:
            try:
                ffi.memmove(into, self._cache.read(sector, count), count * SECTOR)
                return RES_OK
            except BaseException as exc:  # noqa: BLE001 - nothing may escape into FatFs
                self._fail(exc)
        return RES_ERROR

    def write(self, data: Any, sector: int, count: int) -> int:
        """``count`` sectors from FatFs's buffer ``data`` into the cache at ``sector``."""
        if not self.failed:
            try:
                self._cache.write(sector, count, ffi.buffer(data, count * SECTOR)[:])
                return RES_OK
            except BaseException as exc:  # noqa: BLE001 - nothing may escape into FatFs
                self._fail(exc)
        return RES_ERROR

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        if isinstance(exc, BlockIoError):
            self._log(f"block I/O failed: {exc}")
        else:
            self.bug = exc


@ffi.def_extern(error=RES_ERROR)
def fatfs_disk_read(drive: int, buff: Any, sector: int, count: int) -> int:
    disk = DISKS.get(drive)
    return RES_ERROR if disk is None else disk.read(buff, sector, count)


@ffi.def_extern(error=RES_ERROR)
def fatfs_disk_write(drive: int, buff: Any, sector: int, count: int) -> int:
    disk = DISKS.get(drive)
    return RES_ERROR if disk is None else disk.write(buff, sector, count)
