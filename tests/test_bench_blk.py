"""The block benchmark's parts (bench/blk_components.py, bench/blk_engines.py, bench/fat_components.py,
bench/blk.py): its timed window, the block numbers a workload makes, the load client PD against a
virtualiser the test plays, the I/O engines and the direct baseline on a real file, the CPU sampler,
and runs of the benchmark systems (block load; FAT file read) through real processes."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.blk_components import (READY_LINE, RESULT_PREFIX, BlkLoad, LoadError, Window,  # noqa: E402
                                  block_numbers, parse_result, workload)
from bench.blk_engines import DriverEngine, UringEngine, run_direct, run_engine, uring_problem  # noqa: E402
from bench.fat_components import CHUNK, WORKLOAD as FAT_WORKLOAD, read_with_pyfatfs  # noqa: E402

from sddf.blk.config import BlkVirtConfig  # noqa: E402
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, BlkStorageInfo, ReqConsumer,  # noqa: E402
                            RespProducer, write_storage_info)
from sddf.classes import Sddf  # noqa: E402
from sddf.config import typed  # noqa: E402
from sddf.system import ProtectionDomain, SystemDescription  # noqa: E402
from sddf.testing import Bench  # noqa: E402

IDLE = "blk_helpers.rig:Idle"
PARTITION_BLOCKS = 64
MS = 1_000_000


# ---- the window -------------------------------------------------------------------------------
def test_the_window_counts_only_what_completes_inside_it() -> None:
    window = Window(warmup_s=0.001, seconds=0.002, now_ns=0)
    assert window.completed(500_000, 3), "warm-up: keep going"
    assert window.t0 == 0 and window.ops == 0, "warm-up completions are not counted"
    assert window.completed(1 * MS, 2) and window.t0 == 1 * MS, "the first completion after the warm-up opens it"
    assert window.ops == 0, "…and belongs to the warm-up"
    assert window.completed(2 * MS, 4) and window.completed(2 * MS + 1, 0)
    assert not window.completed(3 * MS, 5), "at t0 + seconds the window is over"
    assert (window.ops, window.passes) == (4, 1)
    outcome = window.outcome(workload("rand4k-read-qd1", 0.002))
    assert (outcome.t0_ns, outcome.t1_ns, outcome.bytes) == (1 * MS, 3 * MS, 4 * BLK_TRANSFER_SIZE)
    assert outcome.iops == pytest.approx(2000)


# ---- block numbers --------------------------------------------------------------------------------
def test_random_requests_stay_inside_the_span_aligned_and_repeatable() -> None:
    w = workload("rand4k-read-qd32", 1.0)
    w.blocks = 4
    first = [b for b, _ in zip(block_numbers(w, 42), range(2000))]
    assert all(0 <= b <= 36 and b % 4 == 0 for b in first)
    assert set(first) == set(range(0, 40, 4)), "every aligned place is used"
    assert first == [b for b, _ in zip(block_numbers(w, 42), range(2000))], "seeded"


def test_sequential_requests_follow_each_other_and_wrap() -> None:
    w = workload("seq1m-read", 1.0)
    got = [b for b, _ in zip(block_numbers(w, 3 * 256 + 10), range(5))]
    assert got == [0, 256, 512, 0, 256]


def test_a_partition_too_small_for_one_request_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no request of 256 blocks"):
        next(block_numbers(workload("seq1m-read", 1.0), 255))


# ---- the load client, with the test as its virtualiser --------------------------------------------
class FakeVirt:
    """The virtualiser's side of the load client's queues, played by the test."""

    def __init__(self, bench: Bench, sdf: SystemDescription) -> None:
        virt_pd = next(pd for pd in sdf.pds if pd.name == "virt")
        port = typed(BlkVirtConfig, virt_pd.config, "virt").clients[0]
        regions = bench.component("virt").regions
        req, resp, capacity = port.queues.views(regions)
        self.requests = ReqConsumer("test:req", req, capacity)
        self.responses = RespProducer("test:resp", resp, capacity)
        self.info, self.channel, self.bench = regions[port.queues.storage_info], port.queues.channel, bench
        self.data_size = port.data.size
        self.pending: list[tuple[int, int, int, int, int]] = []

    def publish(self) -> None:
        write_storage_info(self.info, BlkStorageInfo(b"fake", False, 512, 1, 64, 0, 0, 0, PARTITION_BLOCKS))
        self.notify()

    def notify(self) -> None:
        self.bench.component("virt").notify(self.channel)
        self.bench.run()

    def take(self) -> list[tuple[int, int, int, int, int]]:
        got = self.requests.dequeue_many()
        self.pending += got
        return got

    def answer(self, count: int | None = None, status: int = BlkRespStatus.OK) -> None:
        done, self.pending = self.pending[:count], self.pending[len(self.pending) if count is None else count:]
        assert self.responses.enqueue_many([(status, c if status == 0 else 0, rid)
                                            for _, _, _, c, rid in done]) == len(done)
        self.notify()


@pytest.fixture
def load_rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeVirt]:
    """The load client running ``request.param`` (a workload) against a virtualiser the test plays."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(PARTITION_BLOCKS * BLK_TRANSFER_SIZE))
    w = request.param
    sdf = SystemDescription("load_test")
    driver = sdf.add_pd(ProtectionDomain("driver", IDLE, priority=200))
    virt = sdf.add_pd(ProtectionDomain("virt", IDLE, priority=150))
    load = sdf.add_pd(ProtectionDomain("load", "bench.blk_components:BlkLoad", priority=100))
    blk = Sddf.Blk(sdf, driver, virt, str(image), io_threads=0)
    blk.add_client(load, queue_capacity=max(w.depth, 32), data_size=w.depth * w.request_bytes)
    load.config["workload"] = {**vars(w)}
    blk.connect()
    with Bench(sdf) as bench:
        bench.start()
        yield FakeVirt(bench, sdf)


def shaped(name: str, seconds: float = 0.05, warmup_s: float = 0.0):  # noqa: ANN201
    w = workload(name, seconds, warmup_s=warmup_s)
    return pytest.param(w, id=name)


@pytest.mark.parametrize("load_rig", [shaped("rand4k-read-qd32", seconds=60)], indirect=True)
def test_the_load_waits_for_its_partition_then_keeps_depth_requests_in_flight(load_rig: FakeVirt) -> None:
    virt = load_rig
    assert virt.take() == [], "nothing before the partition is ready"
    virt.publish()
    first = virt.take()
    assert len(first) == 32
    assert all(code == BlkReqCode.READ and count == 1 and 0 <= block < PARTITION_BLOCKS
               for code, _, block, count, _ in first)
    offsets = sorted(offset for _, offset, _, _, _ in first)
    assert offsets == [i * BLK_TRANSFER_SIZE for i in range(32)], "one data slot each, inside its data region"
    assert len({rid for *_, rid in first}) == 32
    virt.answer(5)
    refill = virt.take()
    assert len(refill) == 5, "each answered request is replaced by one new one"
    answered = {offset for _, offset, _, _, _ in first[:5]}
    assert {offset for _, offset, _, _, _ in refill} == answered, "into the slots the answers freed"
    assert virt.take() == []


@pytest.mark.parametrize("load_rig", [shaped("rand4k-write-qd1")], indirect=True)
def test_a_write_load_flushes_after_its_window_and_then_reports(load_rig: FakeVirt,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    virt = load_rig
    virt.publish()
    answered, deadline = 0, time.monotonic() + 5
    while time.monotonic() < deadline:
        got = virt.take()
        assert len(virt.pending) <= 1, "depth 1"
        if got and got[0][0] == BlkReqCode.FLUSH:
            break
        assert got and got[0][0] == BlkReqCode.WRITE
        virt.answer()
        answered += 1
    else:
        pytest.fail("the load never sent its FLUSH")
    assert parse_result(capfd.readouterr().out.splitlines()[-1]) is None, "no result before the FLUSH is answered"
    virt.answer()
    lines = capfd.readouterr().out.splitlines()
    outcome = parse_result(lines[-1])
    assert outcome is not None and outcome.workload == "rand4k-write-qd1"
    assert 0 < outcome.ops < answered, "what completed inside the window, not the warm-up's first answer"
    assert outcome.t1_ns - outcome.t0_ns == 50 * MS
    assert virt.take() == [], "nothing after the report"


@pytest.mark.parametrize("load_rig", [shaped("rand4k-read-qd32", seconds=0.02)], indirect=True)
def test_a_load_reports_once_every_request_is_answered(load_rig: FakeVirt, capfd: pytest.CaptureFixture[str]) -> None:
    virt = load_rig
    virt.publish()
    virt.take()
    virt.answer()  # opens the window
    virt.take()
    time.sleep(0.03)
    virt.answer(1)  # the window is over: this one is not replaced
    assert virt.take() == [] and len(virt.pending) == 31
    assert RESULT_PREFIX not in capfd.readouterr().out, "31 requests are still outstanding"
    virt.answer()
    outcome = parse_result(capfd.readouterr().out.splitlines()[-1])
    assert outcome is not None and outcome.ops == 0, "the window saw no completion before it closed"


@pytest.mark.parametrize("load_rig", [shaped("rand4k-read-qd1", seconds=60)], indirect=True)
def test_a_request_answered_with_an_error_is_a_fault_naming_it(load_rig: FakeVirt) -> None:
    virt = load_rig
    virt.publish()
    virt.take()
    with pytest.raises(LoadError, match=r"request id=\d+ .* was answered with status ERR_IO"):
        virt.answer(status=BlkRespStatus.ERR_IO)


# ---- the engines and the direct baseline on a real file -------------------------------------------
BLOCKS = 256


@pytest.fixture
def numbered(tmp_path: Path) -> Iterator[int]:
    """A file of BLOCKS 4 KiB blocks, each filled with its block number; yields an fd to it."""
    path = tmp_path / "numbered.img"
    path.write_bytes(b"".join(i.to_bytes(4, "little") * 1024 for i in range(BLOCKS)))
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


def engines() -> list:
    uring = pytest.param("uring", marks=pytest.mark.skipif(uring_problem() is not None, reason=str(uring_problem())))
    return ["pool", uring]


@pytest.mark.parametrize("kind", engines())
def test_an_engine_puts_what_each_request_read_in_its_own_slot(numbered: int, kind: str) -> None:
    w = workload("rand4k-read-qd32", 1.0)
    w.depth = 6  # a batch that does not divide the completion ring (32 entries): batches straddle its end
    buffer = memoryview(bytearray(w.depth * BLK_TRANSFER_SIZE))
    io = DriverEngine(numbered, w, buffer, 4) if kind == "pool" else UringEngine(numbered, w, buffer)
    try:
        for round_ in range(40):  # 240 completions: around the completion ring many times
            blocks = {slot: (round_ * 7 + slot * 13) % BLOCKS for slot in range(w.depth)}
            for slot, block in blocks.items():
                io.submit(slot, block * BLK_TRANSFER_SIZE)
            io.commit()
            done: list[tuple[int, int]] = []
            while len(done) < w.depth:
                done += io.wait()
            assert sorted(done) == [(slot, BLK_TRANSFER_SIZE) for slot in range(w.depth)]
            for slot, block in blocks.items():
                assert buffer[slot * BLK_TRANSFER_SIZE:][:4] == block.to_bytes(4, "little"), (round_, slot)
    finally:
        io.close()


@pytest.mark.parametrize("kind", ["direct", "pool", *engines()[1:]])
def test_a_write_workload_writes_only_inside_its_partition(numbered: int, kind: str) -> None:
    first, blocks = 16 * BLK_TRANSFER_SIZE, 64  # the "partition": blocks 16..79 of the file
    before = os.pread(numbered, BLOCKS * BLK_TRANSFER_SIZE, 0)
    w = workload("rand4k-write-qd32", 0.05, warmup_s=0.0)
    outcome = (run_direct(w, numbered, first, blocks) if kind == "direct"
               else run_engine(w, numbered, first, blocks, kind, 4))
    after = os.pread(numbered, BLOCKS * BLK_TRANSFER_SIZE, 0)
    assert outcome.ops > 0 and outcome.cpu_s > 0
    assert after[:first] == before[:first] and after[first + blocks * BLK_TRANSFER_SIZE:] == \
        before[first + blocks * BLK_TRANSFER_SIZE:], "nothing outside the partition changed"
    assert after[first:first + blocks * BLK_TRANSFER_SIZE] != before[first:first + blocks * BLK_TRANSFER_SIZE]


# ---- the benchmark script's parts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def blk_bench() -> object:
    sys.path.append(str(REPO / "bench"))
    import blk  # bench/blk.py (its _common import keeps bench/ behind the standard library)
    return blk


def test_the_sampler_interpolates_cpu_inside_a_window(blk_bench: object) -> None:
    sampler = blk_bench.CpuSampler({"me": os.getpid()})  # type: ignore[attr-defined]
    sampler.stop()
    sampler.samples = [(0, {"me": 0}), (100, {"me": 1000}), (200, {"me": 1000})]
    assert sampler.between(50, 150) == {"me": pytest.approx(500e-9)}
    with pytest.raises(RuntimeError, match="do not cover"):
        sampler.between(50, 250)


def test_the_sampler_sees_this_process_run(blk_bench: object) -> None:
    sampler = blk_bench.CpuSampler({"me": os.getpid()})  # type: ignore[attr-defined]
    t0 = time.monotonic_ns()
    while time.monotonic_ns() - t0 < 100 * MS:
        pass
    t1 = time.monotonic_ns()
    time.sleep(0.05)
    sampler.stop()
    assert 0.05 < sampler.between(t0, t1)["me"] < 0.15


def test_the_benchmark_system_runs_a_workload_through_real_processes(blk_bench: object, tmp_path: Path) -> None:
    disk = blk_bench.make_disk(str(tmp_path / "disk.img"), 8 << 20)  # type: ignore[attr-defined]
    assert disk.first_byte == 1 << 20 and disk.blocks == 7 * 256
    run = blk_bench.run_system(disk.path, workload("rand4k-read-qd32", 0.2, warmup_s=0.05), 4,  # type: ignore[attr-defined]
                               tmp_path)
    assert run.outcome.ops > 100 and run.outcome.workload == "rand4k-read-qd32"
    assert set(run.cpu_s) == {"load", "blk_virt", "blk_driver", "monitor"}
    assert all(run.cpu_s[pd] > 0 for pd in ("load", "blk_virt", "blk_driver")), run.cpu_s
    assert run.counters["blk_virt"]["requests"] >= run.outcome.ops


def test_a_file_read_through_the_fat_server_and_with_pyfatfs_reads_the_whole_file(blk_bench: object,
                                                                                  tmp_path: Path) -> None:
    size = 3 * CHUNK + 12345  # a short last read
    spec, check = blk_bench.make_fat_disk(str(tmp_path / "fat.img"), 16 << 20, size)  # type: ignore[attr-defined]
    run = blk_bench.run_system(spec.rpartition(":")[0], FAT_WORKLOAD, None, tmp_path)  # type: ignore[attr-defined]
    direct = read_with_pyfatfs(spec)
    for outcome in (run.outcome, direct):
        assert (outcome.workload, outcome.bytes, outcome.ops, outcome.check) == (FAT_WORKLOAD, size, 4, check)
        assert outcome.t1_ns > outcome.t0_ns
    assert run.cpu_s["fat"] > 0 and direct.cpu_s > 0


def test_result_lines_round_trip() -> None:
    line = f"load: {RESULT_PREFIX}" + '{"workload": "w", "ops": 3, "bytes": 12, "t0_ns": 1, "t1_ns": 2}'
    assert parse_result(line).ops == 3  # type: ignore[union-attr]
    assert parse_result(f"load: {READY_LINE}: …") is None
    assert BlkLoad.kind == "blk.client"
