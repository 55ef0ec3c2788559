"""The FAT server through a real block system: image-file driver → block virtualiser → FatServer,
on the test bench (every PD in this process, stepped by hand) with the test as the fs client, and
once in real processes with the fs client PD. Images are MBR disks made by ``sddf.blk.image``;
what the system wrote is read on the host with pyfatfs after it stops."""
from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import struct
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddf.apps.fs.blockcache import SECTOR, SECTORS_PER_BLOCK, BlockCache, Transfer
from sddf.blk.image import PartitionSpec, build
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode
from sddf.classes import LionsOs, Sddf
from sddf.config import typed
from sddf.fs.client import FsClient, FsClientCore, FsError
from sddf.fs.config import FsConnection
from sddf.fs.protocol import (MAX_PATH, QUEUE_CAPACITY, STAT_SIZE, TAIL_OFFSET, Completion, FsBuffer, FsCommand,
                              FsOpenFlags, FsQueueConsumer, FsQueueProducer, FsStatus, decode_completion)
from sddf import atomic
from sddf.system import ProtectionDomain, SystemDescription
from sddf.testing import Bench

pytestmark = pytest.mark.timeout(60)

DISK, RAW_PART, FAT_PART = 48 << 20, 4 << 20, 32 << 20

SHARE = 1 << 20
RW_CREATE = FsOpenFlags.READ_WRITE | FsOpenFlags.CREATE
OK = FsStatus.SUCCESS


def make_image(path: Path, fat: bool = True) -> int:
    """An MBR disk: a raw partition 0 and a FAT (or raw) partition 1; partition 1's byte offset."""
    parts = build(str(path), DISK, "mbr", [PartitionSpec(RAW_PART), PartitionSpec(FAT_PART, fat=fat)])
    return parts[1].start


IDLE = "components.idle:Idle"  # the fs client's place: the test drives its queues


def fs_system(image: Path, client: str = IDLE, read_only: bool = False,
              **fat_config: object) -> SystemDescription:
    sdf = SystemDescription("fs_test")
    driver = sdf.add_pd(ProtectionDomain("blk_driver", "sddf.drivers.blk.file:FileBlkDriver", priority=200))
    virt = sdf.add_pd(ProtectionDomain("blk_virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    fat = sdf.add_pd(ProtectionDomain("fat", "sddf.apps.fs.fat:FatServer", priority=120))
    fs_client = sdf.add_pd(ProtectionDomain("fs_client", client, priority=100))
    blk = Sddf.Blk(sdf, driver, virt, str(image), read_only=read_only, io_threads=0)
    fs = LionsOs.FileSystem.Fat(sdf, fat, fs_client, blk=blk, partition=1, share_size=SHARE)
    fat.config.update(fat_config)
    blk.connect()
    fs.connect()
    return sdf


class Rig:
    """The bench running ``fs_system`` and the test's client of the FAT server."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.client = bench.component("fs_client")
        self.refused: Counter[str] = Counter()
        self.conn = typed(FsConnection, self.client.pd.app["fs"], "fs_client")
        self._attach()
        self.share = self.core.share
        self._free = SHARE // 2  # where put() goes next (FsClient's allocator hands out from 0)

    def _attach(self) -> None:
        """A client library attached to the queues as they stand (as a restarted client would)."""
        self.core = FsClientCore("fs_client", self.client.regions, self.conn, lambda c, _why: self.refused.update([c]))
        self.fs = FsClient(self.core, self.step)

    def raw(self, message: bytes) -> list[Completion]:
        """Send ``message`` as it is, return the completions that come back (then re-attach)."""
        FsQueueProducer("test", self.client.regions[self.conn.command_queue]).enqueue(message)
        self.client.notify(self.core.channel)
        self.bench.run()
        done = FsQueueConsumer("test", self.client.regions[self.conn.completion_queue]).dequeue_many()
        self._attach()
        return [decode_completion(m) for m in done]

    def step(self) -> None:
        """Notify the server of what was sent, run the system until it settles, take completions;
        fail (rather than wait for ever) if nothing at all happened."""
        notified = bool(self.core.submitted)
        if notified:
            self.core.submitted = 0
            self.client.notify(self.core.channel)
        sent, answered = len(self.bench.notifies), len(self.core.results)
        steps = self.bench.run()
        self.core.poll()
        assert notified or steps > 1 or len(self.core.results) > answered, "the system settled, commands unanswered"
        if len(self.core.results) > answered:
            assert any((n.sender, n.receiver) == ("fat", "fs_client") for n in self.bench.notifies[sent:]), \
                "completions posted without notifying the client"

    def call(self, cmd: FsCommand, *params: object) -> Completion:
        cmd_id = self.core.submit(cmd, *params)
        assert cmd_id is not None
        self.step()
        return self.core.results.pop(cmd_id)

    def put(self, data: bytes, at: int | None = None) -> FsBuffer:
        """``data`` in the share region at ``at`` (default: after what was put before)."""
        if at is None:
            at, self._free = self._free, self._free + len(data)
        self.share[at:at + len(data)] = data
        return FsBuffer(at, len(data))

    def counters(self) -> Counter[str]:
        return self.bench.counters("fat")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    make_image(path)
    return path


@pytest.fixture
def rig(image: Path) -> Iterator[Rig]:
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        r = Rig(bench)
        r.fs.initialise()
        yield r


def host_fs(image: Path):  # noqa: ANN201 - pyfatfs's PyFatFS
    from pyfatfs.PyFatFS import PyFatFS
    warnings.simplefilter("ignore")  # pyfatfs warns about the dirty bit FatFs leaves alone
    return PyFatFS(str(image), offset=RAW_PART + (1 << 20), read_only=True)


def host_path(host, path: str) -> str:  # noqa: ANN001
    """``path`` as pyfatfs spells it: it ignores the NT case bits FatFs marks an all-lower-case 8.3
    name with (Linux and mtools show "hello.txt", pyfatfs "HELLO.TXT"); FAT names ignore case."""
    found = ""
    for part in path.strip("/").split("/"):
        found += "/" + next(n for n in host.listdir(found or "/") if n.lower() == part.lower())
    return found


def host_read(image: Path, path: str) -> bytes:
    host = host_fs(image)
    try:
        return host.readbytes(host_path(host, path))
    finally:
        host.close()


# ---- every command's happy path ---------------------------------------------------------
def test_every_command_does_what_it_says(rig: Rig) -> None:
    fs = rig.fs
    fs.mkdir("/docs")
    fd = fs.open("/docs/a.txt", RW_CREATE)
    assert fs.write(fd, 0, b"hello world") == 11
    assert fs.size(fd) == 11 and fs.read(fd, 6, 100) == b"world"
    fs.sync(fd)
    fs.truncate(fd, 5)
    assert fs.read(fd, 0, 100) == b"hello"
    fs.truncate(fd, 8)  # lengthening fills with zeros
    assert fs.read(fd, 0, 100) == b"hello\0\0\0"
    assert fs.write(fd, 12, b"!") == 1  # past the end: the gap is zeros
    assert fs.read(fd, 0, 100) == b"hello\0\0\0\0\0\0\0!"
    assert fs.read(fd, 1000, 10) == b""  # past the end: nothing (and the file does not grow)
    fs.close(fd)
    st = fs.stat("/docs/a.txt")
    assert (st.size, st.mode & 0o170000) == (13, 0o100000)
    assert fs.stat("/docs").mode & 0o170000 == fs.stat("/").mode & 0o170000 == 0o040000
    for name in ("b.txt", "c.txt"):
        fs.write_file(f"/docs/{name}", name.encode())
    dfd = rig.call(FsCommand.DIR_OPEN, rig.put(b"/docs")).data
    name_buf = FsBuffer(4096, 256)  # below what put() uses
    names = []
    for expected_location in range(3):
        assert rig.call(FsCommand.DIR_TELL, dfd)[1:] == (OK, expected_location)
        done = rig.call(FsCommand.DIR_READ, dfd, name_buf)
        assert done.status == OK
        names.append(bytes(rig.share[4096:4096 + done.data]).decode())
    assert sorted(names) == ["a.txt", "b.txt", "c.txt"]
    assert rig.call(FsCommand.DIR_READ, dfd, name_buf).status == FsStatus.END_OF_DIRECTORY
    assert rig.call(FsCommand.DIR_SEEK, dfd, 1).status == OK
    second = rig.call(FsCommand.DIR_READ, dfd, name_buf)
    assert bytes(rig.share[4096:4096 + second.data]).decode() == names[1]
    assert rig.call(FsCommand.DIR_REWIND, dfd).status == OK
    first = rig.call(FsCommand.DIR_READ, dfd, name_buf)
    assert bytes(rig.share[4096:4096 + first.data]).decode() == names[0]
    assert rig.call(FsCommand.DIR_CLOSE, dfd).status == OK
    fs.rename("/docs/b.txt", "/docs/renamed.txt")
    fs.remove("/docs/c.txt")
    assert sorted(fs.listdir("/docs")) == ["a.txt", "renamed.txt"]
    for name in ("a.txt", "renamed.txt"):
        fs.remove(f"/docs/{name}")
    fs.rmdir("/docs")
    assert fs.listdir("/") == []
    fs.deinitialise()
    assert rig.call(FsCommand.FILE_SIZE, 0).status == FsStatus.ERROR  # not mounted now
    fs.initialise()
    assert fs.listdir("/") == []
    assert rig.refused == Counter()


def test_written_files_are_on_the_image_for_the_host(image: Path) -> None:
    big = os.urandom(3 << 20)
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        fs = Rig(bench).fs
        fs.initialise()
        fs.mkdir("/data")
        fs.write_file("/data/big.bin", big)
        fs.write_file("/hello.txt", b"hi there\n")
        assert bench.counters("fat")["blk_writes"] <= 48, "writes go out as runs of blocks, not one per cluster"
        bench.restart("fat")  # nothing cached: read it from the disk, where read-ahead brings runs of blocks
        fs.initialise()
        assert fs.read_file("/data/big.bin") == big
        assert bench.counters("fat")["blk_reads"] <= 64, "3 MiB in 768 blocks, read 32 or more at a time"
    host = host_fs(image)
    try:
        assert sorted(name.lower() for name in host.listdir("/")) == ["data", "hello.txt"]
    finally:
        host.close()
    assert host_read(image, "/hello.txt") == b"hi there\n"
    assert hashlib.sha256(host_read(image, "/data/big.bin")).digest() == hashlib.sha256(big).digest()


def test_files_put_there_on_the_host_are_read_through_the_system(tmp_path: Path) -> None:
    from pyfatfs.PyFatFS import PyFatFS
    image = tmp_path / "disk.img"
    make_image(image)
    warnings.simplefilter("ignore")
    host = PyFatFS(str(image), offset=RAW_PART + (1 << 20))
    payload = bytes(range(256)) * 1000
    host.makedir("/from_host")
    host.writebytes("/from_host/data.bin", payload)
    host.close()
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        fs = Rig(bench).fs
        fs.initialise()
        assert fs.listdir("/from_host") == ["data.bin"]
        assert fs.read_file("/from_host/data.bin") == payload


# ---- hostile commands -------------------------------------------------------------------
def test_hostile_commands_get_their_status_and_the_server_goes_on(rig: Rig) -> None:
    fd = rig.fs.open("/f.txt", RW_CREATE)
    ro = rig.fs.open("/g.txt", FsOpenFlags.READ_ONLY | FsOpenFlags.CREATE)
    dfd = rig.call(FsCommand.DIR_OPEN, rig.put(b"/")).data
    path = rig.put(b"/f.txt")
    cases = [
        # buffers outside the share region
        ((FsCommand.FILE_READ, fd, 0, FsBuffer(SHARE - 10, 11)), FsStatus.INVALID_BUFFER),
        ((FsCommand.FILE_WRITE, fd, 0, FsBuffer(SHARE + 1, 0)), FsStatus.INVALID_BUFFER),
        ((FsCommand.FILE_WRITE, fd, 0, FsBuffer(2 ** 64 - 1, 2)), FsStatus.INVALID_BUFFER),
        ((FsCommand.FILE_OPEN, FsBuffer(SHARE - 2, 10), 0), FsStatus.INVALID_BUFFER),
        ((FsCommand.STAT, path, FsBuffer(SHARE - 8, STAT_SIZE)), FsStatus.INVALID_BUFFER),
        ((FsCommand.STAT, path, FsBuffer(0, STAT_SIZE - 1)), FsStatus.INVALID_BUFFER),
        ((FsCommand.DIR_READ, dfd, FsBuffer(2 ** 63, 256)), FsStatus.INVALID_BUFFER),
        # bad fds: never opened, a directory's, a file's used as a directory's
        ((FsCommand.FILE_READ, 77, 0, FsBuffer(0, 10)), FsStatus.INVALID_FD),
        ((FsCommand.FILE_CLOSE, 2 ** 64 - 1), FsStatus.INVALID_FD),
        ((FsCommand.FILE_SIZE, dfd + 100), FsStatus.INVALID_FD),
        ((FsCommand.DIR_READ, 55, FsBuffer(0, 256)), FsStatus.INVALID_FD),
        ((FsCommand.DIR_TELL, fd + 50), FsStatus.INVALID_FD),
        # bad paths
        ((FsCommand.FILE_OPEN, FsBuffer(0, 0), 0), FsStatus.INVALID_PATH),
        ((FsCommand.FILE_OPEN, rig.put(b"/a\0b"), 0), FsStatus.INVALID_PATH),
        ((FsCommand.DIR_CREATE, rig.put(b"/" + b"d" * MAX_PATH)), FsStatus.INVALID_PATH),
        ((FsCommand.DIR_CREATE, rig.put(b"/" + b"n" * 256)), FsStatus.INVALID_NAME),
        ((FsCommand.FILE_REMOVE, rig.put("/日本.txt".encode())), FsStatus.INVALID_NAME),
        ((FsCommand.FILE_OPEN, rig.put(b"/missing/x"), 0), FsStatus.INVALID_PATH),
        ((FsCommand.FILE_OPEN, rig.put(b"/nope.txt"), 0), FsStatus.NO_FILE),
        # unknown flags, wrong access
        ((FsCommand.FILE_OPEN, path, 3), FsStatus.ERROR),
        ((FsCommand.FILE_OPEN, path, 0x100), FsStatus.ERROR),
        ((FsCommand.FILE_WRITE, ro, 0, FsBuffer(0, 4)), FsStatus.INVALID_WRITE),
        ((FsCommand.FILE_WRITE, fd, 2 ** 32 - 2, FsBuffer(0, 4)), FsStatus.INVALID_WRITE),
        ((FsCommand.FILE_TRUNCATE, fd, 2 ** 40), FsStatus.INVALID_WRITE),
        # what FatFs would corrupt the volume over
        ((FsCommand.FILE_OPEN, path, FsOpenFlags.WRITE_ONLY), FsStatus.SERVER_WAS_DENIED),
        ((FsCommand.FILE_REMOVE, path), FsStatus.SERVER_WAS_DENIED),
        ((FsCommand.RENAME, path, rig.put(b"/h.txt")), FsStatus.SERVER_WAS_DENIED),
        ((FsCommand.DIR_REMOVE, rig.put(b"/")), FsStatus.SERVER_WAS_DENIED),
        # names that are not what the command wants
        ((FsCommand.DIR_REMOVE, path), FsStatus.NOT_DIRECTORY),
        ((FsCommand.DIR_OPEN, path), FsStatus.NOT_DIRECTORY),
        ((FsCommand.DIR_CREATE, rig.put(b"/F.TXT")), FsStatus.ALREADY_EXISTS),
    ]
    for (cmd, *params), status in cases:
        assert rig.call(cmd, *params).status == status, (cmd.name, params)
    rig.fs.mkdir("/full")
    rig.fs.write_file("/full/x", b"x")
    assert rig.call(FsCommand.DIR_REMOVE, rig.put(b"/full")).status == FsStatus.NOT_EMPTY
    # unknown command types, and a command with an id the client reuses: answered, not trusted
    for raw_type in (20, 2 ** 64 - 1):
        message = struct.pack("<QQ", 2 ** 64 - 7, raw_type) + bytes(48)
        assert rig.raw(message) == [Completion(2 ** 64 - 7, FsStatus.INVALID_COMMAND, 0)]
    # a directory buffer too small for the next name keeps it for the next DIR_READ
    small = rig.call(FsCommand.DIR_READ, dfd, FsBuffer(0, 2))
    assert small.status == FsStatus.INVALID_BUFFER and small.data == len("f.txt")
    again = rig.call(FsCommand.DIR_READ, dfd, FsBuffer(0, 256))
    assert (again.status, bytes(rig.share[:again.data])) == (OK, b"f.txt")
    # still serving, the file untouched by all of it
    assert rig.fs.write(fd, 0, b"fine") == 4 and rig.fs.read(fd, 0, 10) == b"fine"
    counted = rig.counters()
    assert counted["fs_invalid_buffer"] == 7 and counted["fs_invalid_fd"] == 5 and counted["fs_unknown_command"] == 2


def test_a_client_that_breaks_the_command_queue_is_refused_and_served_after(rig: Rig) -> None:
    queue = rig.client.regions[rig.client.pd.app["fs"]["command_queue"]]
    tail = atomic.load_acquire_u64(atomic.pointer(queue), TAIL_OFFSET)
    atomic.store_release_u64(atomic.pointer(queue), TAIL_OFFSET, tail + QUEUE_CAPACITY + 1)
    rig.client.notify(rig.core.channel)
    rig.bench.run()
    assert rig.counters()["fat:fs_commands.protocol_errors"] == 1
    rig._attach()  # the client starts afresh from the queue as it stands
    rig.fs.write_file("/after.txt", b"still here")
    assert rig.fs.read_file("/after.txt") == b"still here"


def test_commands_sent_together_overlap_and_each_is_answered_once(rig: Rig) -> None:
    """48 files written with every command in flight at once: each completion answers one command."""
    fds = [rig.fs.open(f"/f{i:02}.bin", RW_CREATE) for i in range(48)]
    writes = {}
    for i, fd in enumerate(fds):
        buf = rig.put(bytes([i]) * 10000, i * 10240)
        writes[rig.core.submit(FsCommand.FILE_WRITE, fd, 0, buf)] = buf.size
    closes = [rig.core.submit(FsCommand.FILE_CLOSE, fd) for fd in fds]
    rig.step()
    assert {i: rig.core.results.pop(i) for i in writes} == {i: Completion(i, OK, n) for i, n in writes.items()}
    assert all(rig.core.results.pop(i).status == OK for i in closes)
    assert rig.core.results == {} and rig.core.outstanding == {}
    assert all(rig.fs.read_file(f"/f{i:02}.bin") == bytes([i]) * 10000 for i in range(48))


def test_a_client_that_leaves_its_completions_is_answered_when_it_takes_them(rig: Rig) -> None:
    """Commands past what the completion queue can hold wait in the command queue, not in the server."""
    fd = rig.fs.open("/f.txt", RW_CREATE)
    run_before = rig.counters()["fs_commands"]
    sent = [rig.core.submit(FsCommand.FILE_SIZE, fd) for _ in range(QUEUE_CAPACITY)]
    rig.client.notify(rig.core.channel)
    rig.bench.run()  # all answered, none taken by the client
    more = [rig.core.submit(FsCommand.FILE_SIZE, fd) for _ in range(100)]
    rig.client.notify(rig.core.channel)
    rig.bench.run()
    assert rig.counters()["fs_commands"] == run_before + QUEUE_CAPACITY  # the other 100 wait in the queue
    rig.core.poll()
    assert sorted(rig.core.results) == sent
    rig.core.results.clear()
    rig.client.notify(rig.core.channel)  # room again: a notify (as any next command sends) moves them on
    rig.step()
    assert sorted(rig.core.results) == more and rig.core.outstanding == {}


def test_lengthening_a_file_never_shows_what_a_removed_file_held(rig: Rig) -> None:
    rig.fs.write_file("/secret.bin", b"\xAA" * 300_000)
    rig.fs.remove("/secret.bin")  # its clusters are free again, their bytes as they were
    fd = rig.fs.open("/grown.bin", RW_CREATE)
    rig.fs.truncate(fd, 100_000)
    assert rig.fs.write(fd, 200_000, b"end") == 3
    assert rig.fs.read(fd, 0, 300_000) == bytes(200_000) + b"end"


RESTARTS = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from sddf.fs._fatfs import ffi
from sddf.testing import Bench
import test_fs_server as t
with Bench(t.fs_system(Path({image!r}))) as bench:
    bench.start()
    bench.run()
    rig = t.Rig(bench)
    for i in range(20):
        rig.fs.initialise()
        rig.fs.write_file(f"/f{{i}}.txt", b"x")
        fd = rig.fs.open(f"/f{{i}}.txt")  # left open: its FatFs object goes with the server
        bench.restart("fat")
    handles = [(ffi.new("FATFS *"), ffi.new("FIL *")) for _ in range(2000)]
print("clean")
"""


def test_a_server_restarted_in_one_process_leaves_fatfs_memory_sound(image: Path) -> None:
    """FatFs writes to the file system object it last mounted when it mounts again: a restarted
    server (the bench, ``sddf swap``) must not leave it pointing at freed memory."""
    script = RESTARTS.format(tests=str(Path(__file__).parent), image=str(image))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "clean" in run.stdout, run.stdout + run.stderr


def open_file_then_cut_the_disk(rig: "Rig", image: Path) -> tuple[int, bytes, int]:
    """Mount, write a 2 MiB /big.bin, open it, and shrink the image so the disk ends inside the
    file (the driver answers ERR_IO past the end): (its fd, its bytes, the image's full size)."""
    rig.fs.initialise()
    data = os.urandom(2 << 20)
    rig.fs.write_file("/big.bin", data)
    fd = rig.fs.open("/big.bin")
    full = image.stat().st_size
    os.truncate(image, RAW_PART + (1 << 20) + (2 << 20))
    return fd, data, full


# ---- the block path failing, a partition that is not FAT --------------------------------
def test_a_failing_block_device_answers_error_and_the_server_recovers(image: Path) -> None:
    with Bench(fs_system(image, cache_blocks=16, read_ahead_blocks=0)) as bench:
        bench.start()
        bench.run()
        rig = Rig(bench)
        fd, payload, full = open_file_then_cut_the_disk(rig, image)
        with pytest.raises(FsError, match="ERROR"):
            rig.fs.read(fd, 0, len(payload))  # blocks past the end: the driver answers ERR_IO
        with pytest.raises(FsError, match="ERROR"):
            rig.fs.write_file("/new.bin", os.urandom(1 << 20))
        os.truncate(image, full)
        assert rig.call(FsCommand.FILE_READ, fd, 0, FsBuffer(0, 10)).status == FsStatus.INVALID_FD
        rig.fs.close(fd)
        assert rig.fs.read_file("/big.bin")[:1 << 20] == payload[:1 << 20]


def test_a_block_that_cannot_be_read_to_complete_a_write_answers_error(image: Path) -> None:
    """FatFs writes sectors of new clusters (2 KiB, not 4 KiB-aligned) past the end of a disk that shrank; writes
    there would grow the image again, but sending a 4 KiB block written in part needs the rest of it
    from the disk: the write answers ERROR (and the server goes on)."""
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        rig = Rig(bench)
        rig.fs.initialise()
        rig.fs.write_file("/big.bin", bytes(2 << 20))
        fd = rig.fs.open("/new.bin", RW_CREATE)
        full = image.stat().st_size
        os.truncate(image, RAW_PART + (1 << 20) + (2 << 20))  # the next free cluster is past the end now
        assert rig.call(FsCommand.FILE_WRITE, fd, 4096, rig.put(b"s" * 512)).status == FsStatus.ERROR
        os.truncate(image, full)
        rig.fs.close(fd)
        rig.fs.write_file("/after.txt", b"fine")
        assert rig.fs.read_file("/after.txt") == b"fine"


def test_writes_the_device_refuses_answer_error_and_reads_go_on(tmp_path: Path) -> None:
    """On a read-only image every write the cache sends fails (after FatFs was told it worked):
    the command answers ERROR, and the volume forgets what it cached."""
    image = tmp_path / "disk.img"
    make_image(image)
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        fs = Rig(bench).fs
        fs.initialise()
        fs.write_file("/kept.txt", b"kept")
    with Bench(fs_system(image, read_only=True)) as bench:
        bench.start()
        bench.run()
        fs = Rig(bench).fs
        fs.initialise()
        with pytest.raises(FsError, match="DIR_CREATE /new: ERROR"):
            fs.mkdir("/new")
        assert fs.listdir("/") == ["kept.txt"]
        assert fs.read_file("/kept.txt") == b"kept"


def test_initialise_waits_for_the_virtualiser_to_make_the_partition_ready(image: Path) -> None:
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.stall("blk_virt")  # it has not read the partition table yet
        rig = Rig(bench)
        cmd_id = rig.core.submit(FsCommand.INITIALISE)
        rig.client.notify(rig.core.channel)
        bench.run()
        rig.core.poll()
        assert rig.core.results == {}, "no answer while the partition is not ready"
        bench.resume("blk_virt")
        rig.step()
        assert rig.core.results == {cmd_id: Completion(cmd_id, OK, 0)}


def test_a_partition_without_fat_is_refused_not_formatted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "raw.img"
    make_image(image, fat=False)
    before = image.read_bytes()
    with Bench(fs_system(image)) as bench:
        bench.start()
        bench.run()
        rig = Rig(bench)
        assert rig.call(FsCommand.INITIALISE).status == FsStatus.ERROR
        assert rig.call(FsCommand.DIR_CREATE, rig.put(b"/x")).status == FsStatus.ERROR
    assert "no FAT file system" in capfd.readouterr().out
    assert image.read_bytes() == before


# ---- the client PD, in real processes ----------------------------------------------------
SYSTEM_FILE = """
from sddf.classes import LionsOs, Sddf
from sddf.system import ProtectionDomain, SystemDescription


def system():
    sdf = SystemDescription("fs_e2e")
    driver = sdf.add_pd(ProtectionDomain("blk_driver", "sddf.drivers.blk.file:FileBlkDriver", priority=200))
    virt = sdf.add_pd(ProtectionDomain("blk_virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    fat = sdf.add_pd(ProtectionDomain("fat", "sddf.apps.fs.fat:FatServer", priority=120))
    client = sdf.add_pd(ProtectionDomain("fs_client", "sddf.apps.fs.client:FsClientPd", priority=100))
    blk = Sddf.Blk(sdf, driver, virt, {image!r})
    fs = LionsOs.FileSystem.Fat(sdf, fat, client, blk=blk, partition=1)
    client.config["actions"] = {actions!r}
    blk.connect()
    fs.connect()
    return sdf
"""
ACTIONS = [["mkdir", "/docs"], ["write", "/docs/hello.txt", "hello from a PD"], ["fill", "/docs/big.bin", "1500000"],
           ["read", "/docs/hello.txt"], ["read", "/host.txt"], ["list", "/docs"], ["rename", "/docs/big.bin",
           "/big.bin"], ["stat", "/big.bin"], ["remove", "/nothing"], ["read?", "/nothing"]]


@pytest.mark.timeout(90)
def test_the_client_pd_runs_its_script_in_real_processes(tmp_path: Path) -> None:
    from pyfatfs.PyFatFS import PyFatFS
    image = tmp_path / "disk.img"
    make_image(image)
    warnings.simplefilter("ignore")
    host = PyFatFS(str(image), offset=RAW_PART + (1 << 20))
    host.writebytes("/host.txt", b"put there by the host")
    host.close()
    system_file = tmp_path / "fs_e2e.py"
    system_file.write_text(SYSTEM_FILE.format(image=str(image), actions=ACTIONS))
    env = {**os.environ, "SDDF_RUN_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "sddf.cli", "run", str(system_file)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "fs_client: done" in line or "faulted" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    output = "\n".join(lines) + rest
    assert "faulted" not in output and proc.returncode == 0, output
    results = dict(re.findall(r"^fs_client: (.*?): (.*)$", output, re.MULTILINE))
    assert results["mkdir /docs"] == "ok"
    assert results["read /docs/hello.txt"].startswith("15 bytes sha256 ") and "'hello from a PD'" in results[
        "read /docs/hello.txt"]
    assert "'put there by the host'" in results["read /host.txt"]
    assert results["list /docs"] == "big.bin hello.txt"
    assert results["stat /big.bin"] == "file of 1500000 bytes"
    assert results["read? /nothing"] == "not there"
    assert "fs_client: remove /nothing failed: FILE_REMOVE /nothing: NO_FILE" in output
    assert "fs_client: done (10 operations, 1 failed)" in output
    assert host_read(image, "/docs/hello.txt") == b"hello from a PD"
    big = host_read(image, "/big.bin")
    assert len(big) == 1500000 and big[4096:4100] == (1).to_bytes(4, "little")


# ---- the server's block cache against a model disk ----------------------------------------
class Device:
    """A block device whose transfers do their I/O only when answered (:meth:`answer`), so what
    the cache sends may land in any order the test chooses; answering all in order by default."""

    max_run = 2  # so the cache's limit (twice this, at least) is below the disk

    def __init__(self, disk: bytes) -> None:
        self.disk = bytearray(disk)
        self.inflight: list[tuple[Transfer, bytes | None]] = []
        self.cache: BlockCache | None = None
        self.submitted = 0

    @property
    def busy(self) -> bool:
        return bool(self.inflight)

    def start(self, code: int, block: int, count: int, payload: bytes | None = None,
              into: memoryview | None = None, skip: int = 0) -> Transfer | None:
        if len(self.inflight) >= 6:  # a small queue: the cache must cope with no room
            return None
        t = Transfer(code, block, count, 0, into, skip)
        self.inflight.append((t, None if payload is None else bytes(payload)))
        return t

    def pick(self) -> list[int]:
        """Which transfers in flight to answer now, in order."""
        return list(range(len(self.inflight)))

    def answer(self) -> None:
        """The cache waits: answer some of what is in flight (:meth:`pick`)."""
        picked = self.pick()
        done = [self.inflight[i] for i in picked]
        self.inflight = [x for i, x in enumerate(self.inflight) if i not in picked]
        for t, payload in done:
            span = slice(t.block * BLK_TRANSFER_SIZE, (t.block + t.count) * BLK_TRANSFER_SIZE)
            if t.code == BlkReqCode.WRITE:
                self.disk[span] = payload
            elif t.code == BlkReqCode.READ and t.into is not None:
                start = span.start + t.skip
                t.into[:] = self.disk[start:start + len(t.into)]
            elif t.code == BlkReqCode.READ:
                t.data = bytes(self.disk[span])
            t.done = t.ok = True
        assert self.cache is not None
        self.cache.completed([t for t, _ in done])

    def attach(self, blocks: int, cache_blocks: int = 4) -> BlockCache:
        self.cache = BlockCache(self, blocks, self.answer,  # type: ignore[arg-type]  # duck-typed port
                                cache_blocks=cache_blocks, read_ahead=3)
        return self.cache


class ShuffledDevice(Device):
    """Answers a drawn non-empty subset of what is in flight, in a drawn order."""

    def __init__(self, disk: bytes, draw: st.DrawFn) -> None:
        super().__init__(disk)
        self.draw = draw

    def pick(self) -> list[int]:
        order = self.draw(st.permutations(range(len(self.inflight))))
        return order[:self.draw(st.integers(1, len(order)))]


def test_a_block_written_in_part_keeps_the_disk_in_its_other_sectors() -> None:
    disk = bytes(range(256)) * 16 * 4  # 4 blocks, no sector all zeros
    device = Device(disk)
    cache = device.attach(4, cache_blocks=64)  # dirty blocks stay until sent
    cache.write(9, 1, b"\1" * SECTOR)   # block 1, sector 1 of 8: no read needed yet
    cache.write(10, 1, bytes(SECTOR))   # zeros where the cache has no data yet
    assert device.inflight == []
    expected = disk[8 * SECTOR:9 * SECTOR] + b"\1" * SECTOR + bytes(SECTOR) + disk[11 * SECTOR:16 * SECTOR]
    assert bytes(cache.read(8, 8)) == expected
    cache.sync()
    assert device.disk[BLK_TRANSFER_SIZE:2 * BLK_TRANSFER_SIZE] == expected


def test_a_read_ahead_answered_after_a_write_does_not_undo_it() -> None:
    device = Device(bytes(8 * BLK_TRANSFER_SIZE))
    cache = device.attach(8)
    cache.read(0, 8)
    cache.read(8, 8)  # a sequential reader: blocks 2.. are read ahead, not waited for
    assert any(t.block <= 2 < t.block + t.count for t, _ in device.inflight)
    cache.write(16, 8, b"\7" * BLK_TRANSFER_SIZE)  # all of block 2, while its read is in flight
    cache.sync()  # answers the read ahead after the write
    assert bytes(cache.read(16, 8)) == b"\7" * BLK_TRANSFER_SIZE


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_block_cache_reads_what_was_written_whatever_the_device_order(data: st.DataObject) -> None:
    blocks = 12
    model = bytearray(random.Random(data.draw(st.integers(0, 99))).randbytes(blocks * BLK_TRANSFER_SIZE))
    device = ShuffledDevice(model, data.draw)
    cache = device.attach(blocks)
    sectors, after = blocks * SECTORS_PER_BLOCK, 0
    for _ in range(data.draw(st.integers(1, 30))):
        op = data.draw(st.sampled_from(["read", "read_on", "uncached", "write", "write", "flush", "sync"]))
        if op == "uncached":  # past the cache, by byte, in several extents: what was written, though unsent
            extents = [(at, memoryview(bytearray(data.draw(st.integers(1, blocks * BLK_TRANSFER_SIZE - at)))))
                       for at in data.draw(st.lists(st.integers(0, blocks * BLK_TRANSFER_SIZE - 1), max_size=3))]
            cache.read_uncached(extents)
            for at, into in extents:
                assert into == model[at:at + len(into)]
        elif op in ("read", "read_on", "write"):
            sector = after if op == "read_on" and after < sectors else data.draw(st.integers(0, sectors - 1))
            count = data.draw(st.integers(1, min(20, sectors - sector)))
            span = slice(sector * SECTOR, (sector + count) * SECTOR)
            if op == "write":
                payload = b"".join(data.draw(st.binary(min_size=1, max_size=1)) * SECTOR for _ in range(count))
                cache.write(sector, count, payload)
                model[span] = payload
            else:
                assert bytes(cache.read(sector, count)) == model[span]
                after = sector + count
        elif op == "flush":
            cache.flush()
        else:
            cache.sync()
            assert device.disk == model
    cache.sync()
    assert device.disk == model
