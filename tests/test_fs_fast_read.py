"""The FAT server's read path past FatFs: large reads of a file open read-only go from the block
device straight into the client's buffer by the file's cluster runs (FatFs's link map)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from sddf.apps.fs.volume import DIRECT_READ
from sddf.fs.client import FsError
from sddf.fs.protocol import Completion, FsBuffer, FsCommand, FsOpenFlags, FsStatus
from sddf.testing import Bench
from test_fs_server import (RW_CREATE, Rig, fs_system, image, open_file_then_cut_the_disk,  # noqa: F401
                            rig)  # (image, rig: fixtures)

pytestmark = pytest.mark.timeout(60)

PIECE = 4096  # two 2 KiB clusters: interleaved writes of two files leave each in many runs


def fragmented(rig: Rig, size: int) -> bytes:
    """Write /a.bin (returned) and /b.bin a piece at a time in turn, so their clusters interleave."""
    a, b = os.urandom(size), os.urandom(size)
    fa, fb = rig.fs.open("/a.bin", RW_CREATE), rig.fs.open("/b.bin", RW_CREATE)
    for at in range(0, size, PIECE):
        rig.fs.write(fa, at, a[at:at + PIECE])
        rig.fs.write(fb, at, b[at:at + PIECE])
    rig.fs.close(fa)
    rig.fs.close(fb)
    return a


def runs(rig: Rig, fd: int) -> int:
    """How many cluster runs the server found for open file ``fd``."""
    f = rig.bench.component("fat")._volume.files.open[fd]
    return len(f.links.extents(0, f.size))


def test_a_fragmented_file_is_read_whole_past_fatfs(rig: Rig) -> None:
    data = fragmented(rig, 256 << 10)
    fd = rig.fs.open("/a.bin")
    assert runs(rig, fd) >= 32
    before = rig.counters()["blk_reads_uncached"]
    assert rig.fs.read(fd, 0, len(data)) == data
    assert rig.counters()["blk_reads_uncached"] - before >= 32  # one request a run at least: it went past FatFs


def test_reads_at_any_offset_and_size_read_what_was_written(rig: Rig) -> None:
    data = fragmented(rig, 320 << 10)
    fd = rig.fs.open("/a.bin")
    rng = random.Random(11)
    cases = [(0, DIRECT_READ), (1, DIRECT_READ), (PIECE - 1, 2 * PIECE + 3), (len(data) - DIRECT_READ - 5, 2 * DIRECT_READ)]
    cases += [(rng.randrange(len(data)), rng.choice([rng.randrange(1, 4096), rng.randrange(DIRECT_READ, 200_000)]))
              for _ in range(40)]
    for offset, size in cases:
        assert rig.fs.read(fd, offset, size) == data[offset:offset + size], (offset, size)
    assert rig.counters()["blk_reads_uncached"] > 0


def test_a_file_open_for_writing_is_read_through_fatfs_with_what_was_just_written(rig: Rig) -> None:
    fd = rig.fs.open("/w.bin", RW_CREATE)
    data = os.urandom(300_001)
    assert rig.fs.write(fd, 0, data) == len(data)
    patch = os.urandom(1000)
    rig.fs.write(fd, 77_777, patch)  # in FatFs's sector buffer and the cache, maybe not on the disk
    expected = data[:77_777] + patch + data[78_777:]
    assert rig.fs.read(fd, 0, len(data)) == expected
    assert rig.fs.read(fd, 77_000, DIRECT_READ) == expected[77_000:77_000 + DIRECT_READ]
    assert rig.counters()["blk_reads_uncached"] == 0
    rig.fs.close(fd)
    assert rig.fs.read_file("/w.bin") == expected  # read-only now: past FatFs, what was written


def test_commands_sent_together_read_what_the_ones_before_wrote(rig: Rig) -> None:
    """Write, close, open read-only and read, sent at once: the read may start while the writes
    are in flight (or not yet sent), and must still see them."""
    size = 256 << 10
    fd = rig.fs.open("/t.bin", RW_CREATE)
    rig.fs.write(fd, 0, os.urandom(size))
    new = os.urandom(size)
    ids = [rig.core.submit(FsCommand.FILE_WRITE, fd, 0, rig.put(new)), rig.core.submit(FsCommand.FILE_CLOSE, fd),
           rig.core.submit(FsCommand.FILE_OPEN, rig.put(b"/t.bin"), FsOpenFlags.READ_ONLY),
           rig.core.submit(FsCommand.FILE_READ, fd, 0, FsBuffer(0, size))]  # the lowest free fd: the same
    rig.step()
    assert [rig.core.results.pop(i) for i in ids] == [
        Completion(ids[0], FsStatus.SUCCESS, size), Completion(ids[1], FsStatus.SUCCESS, 0),
        Completion(ids[2], FsStatus.SUCCESS, fd), Completion(ids[3], FsStatus.SUCCESS, size)]
    assert bytes(rig.share[:size]) == new
    assert rig.counters()["blk_reads_uncached"] > 0


def test_a_read_that_fails_mid_run_answers_error_and_the_file_stays_open(image: Path) -> None:
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        rig = Rig(bench)
        fd, data, full = open_file_then_cut_the_disk(rig, image)
        with pytest.raises(FsError, match="ERROR"):
            rig.fs.read(fd, 0, len(data))  # the driver answers ERR_IO for the blocks past its end
        os.truncate(image, full)  # zeros past the cut now
        assert rig.fs.read(fd, 0, 1 << 20) == data[:1 << 20]  # no recovery was needed: the handle is good
