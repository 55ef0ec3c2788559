"""The FAT part of the block benchmark: reading one file through the FAT server, and with pyfatfs.

:class:`FatRead` is an fs client PD (``bench.fat_components:FatRead``, wired by
bench/systems/blk_bench.py as workload ``fat-read``): it mounts the file system, opens
:data:`FAT_FILE`, logs ``BLK-BENCH-READY``, then reads the whole file front to back in
:data:`CHUNK` pieces (one FILE_READ each) and logs an :class:`~bench.blk_components.Outcome`
(ops = reads, bytes, the window from the first read to the last answer, ``check`` = the CRC-32
of what it read) as ``BLK-BENCH-RESULT {json}``. A failed command is a fault naming it.

:func:`read_with_pyfatfs` is the baseline: the same reads, from this process, by pyfatfs on the
image file.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass

from bench.blk_components import READY_LINE, RESULT_PREFIX, Outcome
from sddf.fs.client import FsClientComponent
from sddf.fs.config import FsConnection

FAT_FILE = "/bench.bin"
CHUNK = 1 << 20  # bytes per read: the most one FILE_READ moves (sddf.fs.client.CHUNK)
WORKLOAD = "fat-read"


@dataclass
class FatReadConfig:
    fs: FsConnection
    path: str = FAT_FILE
    chunk: int = CHUNK


class FatRead(FsClientComponent):
    """Reads its file once through its fs server and reports; see the module docstring."""

    kind = "fs.client"
    Config = FatReadConfig

    def body(self) -> None:
        cfg: FatReadConfig = self.config
        fs = self.fs
        fs.initialise()
        fd = fs.open(cfg.path)
        size = fs.size(fd)
        self.log(f"{READY_LINE}: {cfg.path} is {size} bytes; reading it in {cfg.chunk}-byte pieces")
        t0 = time.monotonic_ns()
        offset = reads = check = 0
        while offset < size:
            data = fs.read(fd, offset, min(cfg.chunk, size - offset))
            if not data:
                raise EOFError(f"{self.name}: {cfg.path} ended at byte {offset} of {size}")
            check = zlib.crc32(data, check)
            offset += len(data)
            reads += 1
        t1 = time.monotonic_ns()
        fs.close(fd)
        self.log(RESULT_PREFIX + json.dumps(asdict(Outcome(WORKLOAD, reads, offset, t0, t1, check=check))))


def read_with_pyfatfs(spec: str, path: str = FAT_FILE, chunk: int = CHUNK) -> Outcome:
    """Read ``path`` of the FAT file system in ``spec`` (``IMAGE:PART``) with pyfatfs, as FatRead does."""
    from sddf.tools.blk import fat_fs

    with fat_fs(spec) as fs, fs.openbin(path) as f:
        reads = check = size = 0
        t0, cpu0 = time.monotonic_ns(), time.process_time()
        while data := f.read(chunk):
            check = zlib.crc32(data, check)
            size += len(data)
            reads += 1
        t1, cpu1 = time.monotonic_ns(), time.process_time()
    return Outcome(WORKLOAD, reads, size, t0, t1, cpu_s=cpu1 - cpu0, check=check)
