"""The image-file block driver through the test bench: its side of sDDF's block contract.

The virtualiser's place is taken by the test (an idle PD whose queue ends the test drives), so
every request, status and id is the test's to choose and check.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

from sddf.blk.config import BlkVirtConfig
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, ReqProducer, RespConsumer,
                            read_storage_info)
from sddf.classes import Sddf
from sddf.config import typed
from sddf.testing import Bench
from sddf.system import ProtectionDomain, SystemDescription

IDLE = "components.idle:Idle"  # the places the test plays

BLOCKS = 64
DRIVER = "blk_driver"
OK, INVALID, IO = BlkRespStatus.OK, BlkRespStatus.ERR_INVALID_PARAM, BlkRespStatus.ERR_IO
READ, WRITE, FLUSH, BARRIER = BlkReqCode.READ, BlkReqCode.WRITE, BlkReqCode.FLUSH, BlkReqCode.BARRIER


@dataclass
class Rig:
    """The bench, the image and the virtualiser's ends of the driver's queues."""

    bench: Bench
    image: str
    requests: ReqProducer
    responses: RespConsumer
    info: memoryview
    channel: int
    client_io: int  # io address of the client's data region
    client_data: memoryview

    def send(self, *requests: tuple[int, int, int, int, int]) -> None:
        """Queue requests ``(code, io_addr, block, count, id)``, notify the driver, run the bench."""
        assert self.requests.enqueue_many(requests) == len(requests)
        self.bench.component("virt").notify(self.channel)
        self.bench.run()

    def answers(self, expected: int, timeout_s: float = 5.0, kick: bool = False) -> dict[int, tuple[int, int]]:
        """id -> (status, success_count) of ``expected`` responses (each id answered once); with
        ``kick`` the virtualiser notifies the driver after taking responses (for answers that
        waited for room), else the driver must raise its own irq as requests finish."""
        got: dict[int, tuple[int, int]] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            self.bench.run()
            taken = self.responses.dequeue_many()
            for status, count, rid in taken:
                assert rid not in got, f"id {rid} answered twice"
                got[rid] = (status, count)
            if kick and taken and DRIVER in self.bench.components:
                self.bench.component("virt").notify(self.channel)
            elif len(got) < expected:
                time.sleep(0.002)
        assert len(got) == expected, f"{len(got)} of {expected} answered: {got}"
        return got

    def io(self, offset: int) -> int:
        return self.client_io + offset


def _image(path: str, blocks: int = BLOCKS) -> None:
    with open(path, "wb") as f:
        for b in range(blocks):
            f.write(bytes([b]) * BLK_TRANSFER_SIZE)


def _rig(tmp_path, read_only: bool = False, io_threads: int = 0, blocks: int = BLOCKS, delay_us: int = 0) -> Rig:
    image = str(tmp_path / "disk.img")
    _image(image, blocks)
    sdf = SystemDescription("blk_driver_test")
    driver = sdf.add_pd(ProtectionDomain(DRIVER, "sddf.drivers.blk.file:FileBlkDriver", priority=200))
    virt = sdf.add_pd(ProtectionDomain("virt", IDLE, priority=150))
    client = sdf.add_pd(ProtectionDomain("client", IDLE, priority=100))
    blk = Sddf.Blk(sdf, driver, virt, image, read_only=read_only, io_threads=io_threads, delay_us=delay_us)
    blk.add_client(client, data_size=16 * BLK_TRANSFER_SIZE)
    blk.connect()
    bench = Bench(sdf)
    bench.start()
    cfg = typed(BlkVirtConfig, virt.config, "virt")
    regions = bench.component("virt").regions
    req, resp, capacity = cfg.driver.views(regions)
    data = cfg.clients[0].data
    return Rig(bench, image, ReqProducer("virt:req", req, capacity), RespConsumer("virt:resp", resp, capacity),
               regions[cfg.driver.storage_info], cfg.driver.channel, data.io_addr,
               bench.component("client").regions[f"blk_data_{client.name}"])


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    r = _rig(tmp_path)
    yield r
    r.bench.close()


def _block(image: str, block: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(block * BLK_TRANSFER_SIZE)
        return f.read(BLK_TRANSFER_SIZE)


def test_storage_info_is_published_ready_with_the_image_size(rig: Rig) -> None:
    info = read_storage_info(rig.info)
    assert info is not None
    assert (info.capacity, info.read_only, info.block_size, info.serial_number) == (BLOCKS, False, 1, b"pysddf")
    assert info.queue_depth == rig.requests.capacity


def test_reads_and_writes_reach_the_image_and_keep_their_ids(rig: Rig) -> None:
    rig.client_data[0:BLK_TRANSFER_SIZE] = b"\xab" * BLK_TRANSFER_SIZE
    rig.send((WRITE, rig.io(0), BLOCKS - 1, 1, 77), (READ, rig.io(BLK_TRANSFER_SIZE), 0, 2, 5),
             (FLUSH, 0, 0, 0, 1 << 31), (BARRIER, 0, 0, 0, 9))
    assert rig.answers(4) == {77: (OK, 1), 5: (OK, 2), 1 << 31: (OK, 0), 9: (OK, 0)}
    assert _block(rig.image, BLOCKS - 1) == b"\xab" * BLK_TRANSFER_SIZE  # the last block
    assert bytes(rig.client_data[BLK_TRANSFER_SIZE:3 * BLK_TRANSFER_SIZE]) == (
        b"\x00" * BLK_TRANSFER_SIZE + b"\x01" * BLK_TRANSFER_SIZE)


@pytest.mark.parametrize("request_, why", [
    ((7, 0, 0, 1), "code"),
    ((READ, 0, 0, 0), "count"),
    ((WRITE, 0, 0, 0), "count"),
    ((READ, 0, BLOCKS - 1, 2), "range"),
    ((WRITE, 0, BLOCKS, 1), "range"),
    ((READ, 0, 2**63, 1), "range"),
    ((READ, -1, 0, 1), "data"),          # below the region (io 0 is nobody's)
    ((READ, 15 * BLK_TRANSFER_SIZE, 0, 2), "data"),  # runs past the client's 16 transfers
])
def test_an_invalid_request_is_answered_invalid_param_and_touches_nothing(rig: Rig, request_, why: str) -> None:
    code, offset, block, count = request_
    offset = 0 if offset == -1 else rig.io(offset)
    before = open(rig.image, "rb").read()
    rig.client_data[:] = b"\x5a" * len(rig.client_data)
    rig.send((code, offset, block % 2**64, count, 42))
    assert rig.answers(1) == {42: (INVALID, 0)}
    assert open(rig.image, "rb").read() == before
    assert bytes(rig.client_data) == b"\x5a" * len(rig.client_data)
    assert rig.bench.counters(DRIVER)[f"invalid.{why}"] == 1


def test_a_read_only_image_refuses_writes_and_serves_reads(tmp_path) -> None:
    r = _rig(tmp_path, read_only=True)
    try:
        assert read_storage_info(r.info).read_only
        before = open(r.image, "rb").read()
        r.send((WRITE, r.io(0), 3, 1, 1), (READ, r.io(0), 3, 1, 2))
        assert r.answers(2) == {1: (INVALID, 0), 2: (OK, 1)}
        assert open(r.image, "rb").read() == before
        assert bytes(r.client_data[:BLK_TRANSFER_SIZE]) == b"\x03" * BLK_TRANSFER_SIZE
    finally:
        r.bench.close()


def test_an_image_that_shrinks_underneath_fails_reads_past_its_end_with_honest_counts(rig: Rig) -> None:
    os.truncate(rig.image, 10 * BLK_TRANSFER_SIZE)
    rig.send((READ, rig.io(0), 8, 4, 3), (READ, rig.io(0), 20, 1, 4))
    assert rig.answers(2) == {3: (IO, 2), 4: (IO, 0)}


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs (a full disk) needs root")
def test_a_full_disk_answers_err_io_with_the_transfers_that_landed(tmp_path) -> None:
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        r = _rig(mnt, blocks=4)  # 16 KiB written
        try:
            os.truncate(r.image, BLOCKS * BLK_TRANSFER_SIZE)  # sparse: more than the 64 KiB tmpfs holds
            r.bench.restart(DRIVER)  # sees the new size
            r.bench.run()
            r.send((WRITE, r.io(0), 8, 16, 11))
            status, landed = r.answers(1)[11]
            assert status == IO and 0 < landed < 16, (status, landed)
        finally:
            r.bench.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_barrier_holds_back_what_follows_until_what_precedes_it_is_done(tmp_path) -> None:
    """Every request takes 0.15 s here: a read behind a barrier starts only once the write before
    the barrier has finished, so it reads what was written and comes after both."""
    r = _rig(tmp_path, io_threads=4, delay_us=150_000)
    try:
        r.client_data[:BLK_TRANSFER_SIZE] = b"\xee" * BLK_TRANSFER_SIZE
        started = time.monotonic()
        r.send((WRITE, r.io(0), 5, 1, 1), (BARRIER, 0, 0, 0, 2), (READ, r.io(BLK_TRANSFER_SIZE), 5, 1, 3))
        assert r.answers(3) == {1: (OK, 1), 2: (OK, 0), 3: (OK, 1)}
        assert time.monotonic() - started >= 0.3  # one after the other, not side by side
        assert bytes(r.client_data[BLK_TRANSFER_SIZE:2 * BLK_TRANSFER_SIZE]) == b"\xee" * BLK_TRANSFER_SIZE
    finally:
        r.bench.close()


def test_requests_run_at_once_on_the_io_threads(tmp_path) -> None:
    r = _rig(tmp_path, io_threads=8, delay_us=250_000)
    try:
        started = time.monotonic()
        r.send(*[(READ, r.io(i * BLK_TRANSFER_SIZE), i, 1, i) for i in range(8)])
        assert set(r.answers(8).values()) == {(OK, 1)}
        assert time.monotonic() - started < 1.5  # eight 0.25 s reads overlapped, not 2 s in a row
    finally:
        r.bench.close()


def test_a_driver_killed_at_any_write_answers_every_request_exactly_once(tmp_path) -> None:
    """Kill -9 the driver before each of its shared-memory writes while it serves a batch that
    it cannot answer yet (the virtualiser has not taken the responses to a full queue of earlier
    requests): after its restart every request is answered exactly once, OK or — if the dead
    instance had taken it — ERR_IO, and every write acknowledged OK is on the image."""
    r = _rig(tmp_path)
    try:
        capacity = r.requests.capacity
        fill = [(READ, r.io(15 * BLK_TRANSFER_SIZE), 0, 1, 1000 + i) for i in range(capacity)]
        batch = [(WRITE, r.io(i * BLK_TRANSFER_SIZE), 10 + i, 1, 100 + i) for i in range(6)]
        batch.insert(3, (FLUSH, 0, 0, 0, 99))
        r.client_data[:6 * BLK_TRANSFER_SIZE] = b"".join(bytes([0xA0 + i]) * BLK_TRANSFER_SIZE for i in range(6))
        write, answered_after_restart = 1, 0
        while True:
            r.send(*fill)  # answered into a full response queue
            r.bench.kill_at(DRIVER, write)
            r.send(*batch)
            killed = DRIVER not in r.bench.components
            if killed:
                r.bench.restart(DRIVER)
            else:
                r.bench.disarm()
            got = r.answers(len(fill) + len(batch), kick=True)
            assert set(got) == {rid for *_, rid in fill + batch}
            assert all(status in (OK, IO) for status, _ in got.values())
            answered_after_restart += sum(status == IO for status, _ in got.values())
            for code, _, block, _, rid in batch:
                if code == WRITE and got[rid][0] == OK:
                    assert _block(r.image, block) == bytes([0xA0 + rid - 100]) * BLK_TRANSFER_SIZE
            if not killed:
                break
            write += 1
        assert write > 5 and answered_after_restart > 0  # the sweep went through the pass
    finally:
        r.bench.close()
