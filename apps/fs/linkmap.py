"""Where a file's bytes lie on its partition, from FatFs's fast-seek link map (CLMT).

FatFs (built with FF_USE_FASTSEEK) fills a file's link map on ``f_lseek(fp, CREATE_LINKMAP)``
with the file's cluster runs: ``[items used, (clusters, first cluster)…, 0]``. :class:`LinkMap`
keeps the table alive (the FIL points at it while the file is open: FatFs then seeks and reads
by it, never walking the FAT again) and turns a byte range of the file into byte extents on the
partition, for reads that go to the block device without FatFs. The table comes from the disk,
so it is checked: every run inside the volume's clusters, and the runs covering the file.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any

from sddf.fs._fatfs import ffi, lib

FIRST_SIZE = 64  # table items first offered (30 runs); FatFs says how many it needs if more


class LinkMapError(Exception):
    """FatFs could not make the map, or the map does not describe the file."""


class LinkMap:
    """A read-only file's cluster runs as byte extents; see the module docstring."""

    def __init__(self, fil: Any, size: int, sector: int) -> None:
        """Make ``fil``'s map (``size``: the file's bytes, ``sector``: bytes per sector) and
        leave ``fil`` using it; on LinkMapError the caller closes ``fil``."""
        items = FIRST_SIZE
        while True:
            self._table = ffi.new("DWORD[]", items)
            self._table[0] = items
            fil.cltbl = self._table
            result = lib.f_lseek(fil, lib.CREATE_LINKMAP)
            if result != lib.FR_NOT_ENOUGH_CORE or self._table[0] <= items:
                break
            items = self._table[0]
        if result != lib.FR_OK:
            raise LinkMapError(f"FatFs result {result}")
        fs = fil.obj.fs
        cluster_bytes = fs.csize * sector
        self._starts: list[int] = []  # file offset where each run begins
        self._disk: list[int] = []  # partition byte offset of each run
        at = 0
        for i in range(1, self._table[0] - 1, 2):
            clusters, first = self._table[i], self._table[i + 1]
            if clusters == 0 or first < 2 or first + clusters > fs.n_fatent:
                raise LinkMapError(f"run of {clusters} clusters from cluster {first} lies outside the volume "
                                   f"(clusters 2..{fs.n_fatent - 1})")
            self._starts.append(at)
            self._disk.append((fs.database + (first - 2) * fs.csize) * sector)
            at += clusters * cluster_bytes
        self._starts.append(at)
        if at < size:
            raise LinkMapError(f"the cluster chain holds {at} bytes of a {size}-byte file")

    def extents(self, offset: int, size: int) -> list[tuple[int, int]]:
        """(partition byte offset, bytes) runs holding the file's bytes ``offset``..``offset + size``."""
        out: list[tuple[int, int]] = []
        end = offset + size
        i = bisect_right(self._starts, offset) - 1
        while offset < end:
            run_end = self._starts[i + 1]
            n = min(end, run_end) - offset
            out.append((self._disk[i] + offset - self._starts[i], n))
            offset += n
            i += 1
        return out
