"""Block benchmark: client → block virtualiser → image-file driver, against direct I/O on the same file.

Measured in one run, on one disk image made here (an MBR table, one partition filled with random
data) and each workload on the same partition bytes:

* ``pysddf``  bench/systems/blk_bench.py under the monitor (``sddf run``, real processes): the
              load client PD (bench/blk_components.py) keeps the workload's requests in flight
              through ``blk_virt`` to ``blk_driver`` (its default 8 I/O threads) and reports what
              completed in its timed window; the CPU of every PD (and the monitor) over that window
              is sampled from /proc/PID/task/*/schedstat;
* ``direct``  the same workload with ``os.preadv``/``os.pwritev`` on the image from this Python
              process (at queue depth > 1, one thread per request in flight: a thread pool as large
              as the depth, all taking requests from one shared stream; bench/blk_engines.py);
* ``fio``     the same workload with fio (psync at depth 1, io_uring above), when fio is installed.

Workloads: 4 KiB random reads and writes at queue depth 1 and 32, and 1 MiB sequential reads and
writes (4 in flight), each a warm-up then a timed window; a write workload is followed by one FLUSH
(fdatasync), outside the window. Caches: ``cold`` (the default as root): dirty data synced and the
page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``) before every measurement, so reads
come from the disk; ``warm`` (``--warm``, or when caches cannot be dropped): the image is read once
and stays cached, so the figures are the I/O paths' own cost. Writes go to the page cache in both.

Then the I/O engine: 4 KiB random reads at depth 32 through the pysddf system with the driver's
io_threads = 1, 8, 16, 32; and, standalone in this process, the driver's engine (sddf.blk.io: N C
threads running pread, completions announced on an eventfd, driven as the driver drives it) against io_uring
through the ``liburing`` PyPI binding (readv into the buffer, completions on a registered eventfd).

Then files: an image with one FAT partition holding a file of random bytes (written by pyfatfs),
read once front to back in 1 MiB reads through the FAT server (load → ``fat``, the FatFs server of
sddf.apps.fs.fat → blk_virt → blk_driver; bench/fat_components.py), against pyfatfs reading it
on the image from this process; both check the CRC-32 of what they read.

``--profile`` then runs 4 KiB random reads at depth 32 through the system once more with
``SDDF_PROFILE_DIR`` set and prints where each PD's CPU went (cProfile, own time per request).
/dev/cpu_dma_latency is held at 0 for the whole run when root (``--no-pm-qos``: not).

    python bench/blk.py [--quick] [--json FILE] [--out DIR] [--dir DIR] [--warm] [--no-fio]
                        [--no-engines] [--no-fat] [--no-pm-qos] [--profile]

``--quick`` (< 60 s on 2 cores): a 2 GiB image, 0.6 s windows, a 32 MiB file; figures rough,
ratios indicative.
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib)

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from _common import Target, console, print_table, rate

REPO = _common.BENCH_DIR.parent
sys.path.append(str(REPO))
from bench.blk_components import READY_LINE, SHAPES, Outcome, Workload, parse_result, workload  # noqa: E402
from bench.blk_engines import run_direct, run_engine, uring_problem  # noqa: E402
from bench.fat_components import CHUNK, FAT_FILE, WORKLOAD as FAT_WORKLOAD, read_with_pyfatfs  # noqa: E402
from bench.systems import blk_bench  # noqa: E402
from sddf import control  # noqa: E402
from sddf.blk.image import PartitionSpec, build  # noqa: E402
from sddf.blk.queue import BLK_TRANSFER_SIZE  # noqa: E402
from sddf.tools.blk import fat_fs  # noqa: E402

SYSTEM_FILE = _common.BENCH_DIR / "systems" / "blk_bench.py"
DROP_CACHES = "/proc/sys/vm/drop_caches"
FILL_CHUNK = 8 << 20
ENGINE_WORKLOAD = "rand4k-read-qd32"
READY_TIMEOUT_S = 4.0  # from start-up until the load client starts its warm-up
RESULT_GRACE_S = 30.0  # beyond warm-up + window, how long a system may take to report
STOP_TIMEOUT_S = 10.0
SAMPLE_PERIOD_S = 0.02
PDS = ("load", "blk_virt", "blk_driver", "monitor")
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    image_size: int
    seconds: float
    warmup_s: float
    repeats: int  # of every measurement, interleaved; the median is reported
    io_threads: tuple[int, ...]
    fat_image_size: int
    fat_file_size: int


FULL = Plan(image_size=8 << 30, seconds=2.0, warmup_s=0.3, repeats=3, io_threads=(1, 8, 16, 32),
            fat_image_size=1 << 30, fat_file_size=128 << 20)
QUICK = Plan(image_size=2 << 30, seconds=0.6, warmup_s=0.15, repeats=1, io_threads=(1, 8, 16, 32),
             fat_image_size=256 << 20, fat_file_size=32 << 20)


@dataclass(frozen=True)
class Disk:
    """The benchmark's image: where its one partition starts and how many blocks it has."""

    path: str
    first_byte: int
    blocks: int


# ---- the image and the page cache -----------------------------------------------------------------
def make_disk(path: str, size: int) -> Disk:
    """An image of ``size`` bytes with an MBR and one partition, every byte of it written (a
    sparse or fallocated file would read holes without touching the disk)."""
    part = build(path, size, "mbr", [PartitionSpec(None)])[0]
    chunk = os.urandom(FILL_CHUNK)
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in range(0, part.size, FILL_CHUNK):
            os.pwrite(fd, chunk[:part.size - offset], part.start + offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return Disk(path, part.start, part.size // BLK_TRANSFER_SIZE)


class Cache:
    """Puts the page cache in the state every measurement starts from: ``cold`` syncs and drops
    it, ``warm`` syncs (each image was read into it once: :meth:`load`)."""

    def __init__(self, want_warm: bool) -> None:
        self.mode, self.note = "warm", "page cache warm (--warm): reads are served from memory"
        if not want_warm:
            why = drop_problem()
            if why is None:
                self.mode, self.note = "cold", ("page cache dropped before every measurement "
                                                f"(echo 3 > {DROP_CACHES}): reads come from the disk")
            else:
                self.note = f"page cache warm: caches cannot be dropped ({why}); reads are served from memory"

    def load(self, path: str) -> None:
        """Warm: read the image at ``path`` into the page cache."""
        if self.mode == "warm":
            with open(path, "rb") as f:
                while f.read(FILL_CHUNK):
                    pass

    def reset(self) -> None:
        os.sync()
        if self.mode == "cold":
            with open(DROP_CACHES, "w") as f:
                f.write("3\n")


def drop_problem() -> str | None:
    """Why the page cache cannot be dropped here (None if it can)."""
    if os.geteuid() != 0:
        return "not root"
    try:
        with open(DROP_CACHES, "w") as f:
            f.write("1\n")
    except OSError as exc:
        return f"{DROP_CACHES}: {exc.strerror}"
    return None


# ---- CPU per process ------------------------------------------------------------------------------
def cpu_ns(pid: int) -> int:
    """CPU time (ns) the live threads of ``pid`` have run (schedstat; 0 once it is gone)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total


class CpuSampler:
    """Samples the CPU time of named processes every SAMPLE_PERIOD_S on a thread, so the CPU each
    used inside a window reported afterwards (CLOCK_MONOTONIC) can be interpolated."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[int, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._sample()
        self._thread.start()

    def _sample(self) -> None:
        self.samples.append((time.monotonic_ns(), {name: cpu_ns(pid) for name, pid in self.pids.items()}))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def between(self, t0: int, t1: int) -> dict[str, float]:
        """CPU seconds each process used in [t0, t1] (interpolated between samples)."""
        if not self.samples or self.samples[0][0] > t0 or self.samples[-1][0] < t1:
            raise RuntimeError("the CPU samples do not cover the measured window")
        return {name: (self._at(t1, name) - self._at(t0, name)) / 1e9 for name in self.pids}

    def _at(self, t: int, name: str) -> float:
        for (ta, a), (tb, b) in zip(self.samples, self.samples[1:]):
            if ta <= t <= tb:
                return a[name] + (b[name] - a[name]) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
        raise AssertionError("unreachable: between() checked the range")


# ---- the pysddf system ----------------------------------------------------------------------------
@dataclass
class SystemRun:
    """A finished run of the benchmark system: its outcome, CPU per process in the window, and
    the virtualiser's request count over the whole run (the PDs' counters, read before stopping)."""

    outcome: Outcome
    cpu_s: dict[str, float]
    counters: dict[str, dict[str, int]]


def run_system(image: str, w: Workload | str, io_threads: int | None, work: Path,
               profile_dir: Path | None = None) -> SystemRun:
    """Run ``w`` (a block workload, or ``fat-read``) through bench/systems/blk_bench.py under
    ``sddf run`` and collect its outcome (a run that ends without one raises RunFailed)."""
    return _run_system_once(image, w, io_threads, work, profile_dir)


class RunFailed(Exception):
    """A run of the benchmark system ended without a result."""


def _run_system_once(image: str, w: Workload | str, io_threads: int | None, work: Path,
                     profile_dir: Path | None) -> SystemRun:
    name, seconds, warmup_s = (w, 0.0, 0.0) if isinstance(w, str) else (w.name, w.seconds, w.warmup_s)
    run_dir = tempfile.mkdtemp(prefix="run-", dir=work)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, SDDF_RUN_DIR=run_dir,
               **blk_bench.env(image, name, seconds, warmup_s, io_threads))
    if profile_dir is not None:
        env["SDDF_PROFILE_DIR"] = str(profile_dir)
    log = work / f"{name}-{io_threads}.log"
    with log.open("w") as err, subprocess.Popen(
            [sys.executable, "-m", "sddf.cli", "run", str(SYSTEM_FILE)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=err) as proc:
        try:
            pids = wait_for_pds(proc, run_dir) | {"monitor": proc.pid}
            sampler = CpuSampler(pids)
            try:
                lines = Lines(proc, log)
                if lines.find(lambda line: line if READY_LINE in line else None, READY_TIMEOUT_S) is None:
                    raise RunFailed(f"the load client was not told that its partition is ready within "
                                     f"{READY_TIMEOUT_S:g} s")
                outcome = lines.find(parse_result, warmup_s + seconds + RESULT_GRACE_S)
                if outcome is None:
                    raise RunFailed(f"no result within {warmup_s + seconds + RESULT_GRACE_S:g} s of the warm-up's "
                                    f"start; the end of the system's log:\n{log.read_text()[-1500:]}")
            finally:
                sampler.stop()
            counters = control_in(run_dir, {"cmd": "counters", "fresh": True})["counters"]
        finally:
            stop(proc)
    return SystemRun(outcome, sampler.between(outcome.t0_ns, outcome.t1_ns), counters)


def control_in(run_dir: str, req: dict) -> dict:
    reply, fds = control.request(run_dir, control.only_running_system(run_dir), req)
    for fd in fds:
        os.close(fd)
    return reply


def wait_for_pds(proc: subprocess.Popen, run_dir: str) -> dict[str, int]:
    """Each PD's pid, once the monitor has started them all."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(control.ControlError, OSError):
            pds = control_in(run_dir, {"cmd": "status"})["pds"]
            if all(pd["pid"] for pd in pds):
                return {pd["name"]: pd["pid"] for pd in pds}
        time.sleep(0.01)
    raise RunFailed(f"the benchmark system did not start (exit status {proc.poll()})")


class Lines:
    """The lines a running system's PDs print on the monitor's stdout."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        assert proc.stdout is not None
        self._proc, self._fd, self._log = proc, proc.stdout.fileno(), log
        self._pending, self._lines = b"", deque[str]()

    def find(self, match: Callable[[str], T | None], timeout: float) -> T | None:
        """The first non-None ``match(line)`` of the lines still to come within ``timeout`` s (None if
        none came); a system that exits first is an error showing its log."""
        deadline = time.monotonic() + timeout
        while True:
            while self._lines:
                found = match(self._lines.popleft())
                if found is not None:
                    return found
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise RunFailed(f"the benchmark system exited (status {self._proc.wait()}); the end of "
                                f"its log:\n{self._log.read_text()[-1500:]}")
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            self._lines.extend(line.decode(errors="replace") for line in lines)


def stop(proc: subprocess.Popen) -> None:
    """Stop the monitor (SIGINT: it stops every PD) and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- fio ------------------------------------------------------------------------------------------
FIO_RW = {(False, False): "randread", (True, False): "randwrite", (False, True): "read", (True, True): "write"}


def run_fio(disk: Disk, w: Workload) -> dict:
    """``w`` run by fio on the same partition bytes: IOPS, MB/s and CPU per request."""
    argv = ["fio", f"--name={w.name}", f"--filename={disk.path}", f"--offset={disk.first_byte}",
            f"--size={disk.blocks * BLK_TRANSFER_SIZE}", f"--rw={FIO_RW[(w.write, w.sequential)]}",
            f"--bs={w.request_bytes}", f"--ioengine={'psync' if w.depth == 1 else 'io_uring'}",
            f"--iodepth={w.depth}", f"--runtime={round(w.seconds * 1000)}ms", f"--ramp_time={round(w.warmup_s * 1000)}ms",
            "--time_based",
            "--norandommap", "--invalidate=0", "--output-format=json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=w.seconds + w.warmup_s + 60)
    if done.returncode:
        raise RuntimeError(f"fio failed: {done.stderr.strip()[-500:]}")
    job = json.loads(done.stdout[done.stdout.index("{"):])["jobs"][0]
    side = job["write" if w.write else "read"]
    seconds = side["runtime"] / 1000
    cpu = (job["usr_cpu"] + job["sys_cpu"]) / 100 * seconds
    if w.write:
        os.sync()  # as the others flush after their window
    return {"iops": side["iops"], "mb_per_s": side["bw_bytes"] / 1e6, "ops": side["total_ios"],
            "cpu_us_per_op": cpu / side["total_ios"] * 1e6 if side["total_ios"] else float("nan")}


# ---- measuring ------------------------------------------------------------------------------------
Job = Callable[[], dict]  # one measurement (from a reset page cache) → its figures


def figures(o: Outcome, cpu_s: float) -> dict:
    return {"iops": o.iops, "mb_per_s": o.mb_per_s, "ops": o.ops, "bytes": o.bytes, "flush_s": o.flush_s,
            "cpu_s_total": cpu_s, "cpu_us_per_op": cpu_s / o.ops * 1e6 if o.ops else float("nan")}


def system_job(image: str, w: Workload | str, io_threads: int | None, work: Path, check: int | None = None) -> Job:
    """``w`` through the benchmark system; with ``check``, the CRC-32 of what it must have read."""
    def job() -> dict:
        run = run_system(image, w, io_threads, work)
        verify(run.outcome, check)
        return figures(run.outcome, sum(run.cpu_s.values())) | {"cpu_s": run.cpu_s, "passes": run.outcome.passes}
    return job


def verify(o: Outcome, check: int | None) -> None:
    if check is not None and o.check != check:
        raise RuntimeError(f"{o.workload}: read data with CRC-32 {o.check:#010x}, the file's is {check:#010x}")


def file_job(disk: Disk, fd: int, w: Workload, engine: str = "", threads: int = 0) -> Job:
    """``w`` on the file from this process: the direct baseline, or an ``engine`` (pool, uring)."""
    def job() -> dict:
        o = (run_engine(w, fd, disk.first_byte, disk.blocks, engine, threads) if engine
             else run_direct(w, fd, disk.first_byte, disk.blocks))
        return figures(o, o.cpu_s)
    return job


def measure(jobs: dict[tuple[str, str], Job], cache: Cache, repeats: int) -> dict[str, dict[str, dict]]:
    """Run every job ``repeats`` times, interleaved, each from a reset page cache; for each, the
    figures of the run with the median throughput (with every run's in ``iops_runs``), as
    result[row][column]."""
    runs: dict[tuple[str, str], list[dict]] = {key: [] for key in jobs}
    for _ in range(repeats):
        for (row, column), job in jobs.items():
            started = time.monotonic()
            cache.reset()
            got = job()
            runs[row, column].append(got)
            console.print(f"  [dim]{row:<18} {column:<10} {rate(got['iops'], ' IOPS'):>12} "
                          f"{got['mb_per_s']:>8,.0f} MB/s  {got['cpu_us_per_op']:7.1f} µs CPU/req "
                          f"({time.monotonic() - started:.1f} s)[/dim]")
    result: dict[str, dict[str, dict]] = {}
    for (row, column), got in runs.items():
        middle = sorted(got, key=lambda f: f["iops"])[len(got) // 2]
        result.setdefault(row, {})[column] = middle | {"iops_runs": [f["iops"] for f in got]}
    return result


def measure_workloads(disk: Disk, fd: int, cache: Cache, plan: Plan, work: Path, fio: bool) -> dict[str, dict]:
    """Every workload through pysddf, directly, and with fio."""
    jobs: dict[tuple[str, str], Job] = {}
    for name in SHAPES:
        w = workload(name, plan.seconds, warmup_s=plan.warmup_s)
        jobs[name, "pysddf"] = system_job(disk.path, w, None, work)
        jobs[name, "direct"] = file_job(disk, fd, w)
        if fio:
            jobs[name, "fio"] = lambda w=w: run_fio(disk, w)
    return measure(jobs, cache, plan.repeats)


def measure_engines(disk: Disk, fd: int, cache: Cache, plan: Plan, work: Path) -> dict:
    """4 KiB random reads at depth 32: the system with each io_threads; standalone pool and io_uring."""
    w = workload(ENGINE_WORKLOAD, plan.seconds, warmup_s=plan.warmup_s)
    jobs: dict[tuple[str, str], Job] = {}
    for n in plan.io_threads:
        jobs["system", str(n)] = system_job(disk.path, w, n, work)
        jobs["standalone", f"pool-{n}"] = file_job(disk, fd, w, "pool", n)
    why_not = uring_problem()
    if why_not is None:
        jobs["standalone", "io_uring"] = file_job(disk, fd, w, "uring")
    got = measure(jobs, cache, plan.repeats)
    return {"system_io_threads": got["system"], "standalone": got["standalone"], "io_uring_note": why_not}


def make_fat_disk(path: str, image_size: int, file_size: int) -> tuple[str, int]:
    """An image with one FAT partition holding FAT_FILE, ``file_size`` random bytes written by
    pyfatfs; its ``IMAGE:PART`` spec and the file's CRC-32."""
    build(path, image_size, "mbr", [PartitionSpec(None, fat=True)])
    spec, chunk, check = f"{path}:0", os.urandom(CHUNK), 0
    with fat_fs(spec, write=True) as fs, fs.openbin(FAT_FILE, "w") as f:
        for offset in range(0, file_size, CHUNK):
            piece = chunk[:file_size - offset]
            f.write(piece)
            check = zlib.crc32(piece, check)
    return spec, check


def measure_fat(cache: Cache, plan: Plan, work: Path) -> dict[str, dict]:
    """Reading FAT_FILE once through the FAT server, and with pyfatfs on the image."""
    spec, check = make_fat_disk(str(work / "fat.img"), plan.fat_image_size, plan.fat_file_size)
    cache.load(spec.rpartition(":")[0])

    def pyfatfs_job() -> dict:
        o = read_with_pyfatfs(spec)
        verify(o, check)
        return figures(o, o.cpu_s)

    return measure({(FAT_WORKLOAD, "pysddf"): system_job(spec.rpartition(":")[0], FAT_WORKLOAD, None, work, check),
                    (FAT_WORKLOAD, "pyfatfs"): pyfatfs_job}, cache, plan.repeats)[FAT_WORKLOAD]


def profile(disk: Disk, cache: Cache, plan: Plan, work: Path) -> None:
    """Run the engine workload with every PD under cProfile; print each PD's hottest functions."""
    w = workload(ENGINE_WORKLOAD, plan.seconds, warmup_s=plan.warmup_s)
    out = _common.out_dir(work / "profile")
    cache.reset()
    run = run_system(disk.path, w, None, work, profile_dir=out)
    requests = run.counters.get("blk_virt", {}).get("requests", 0)
    console.print(f"profile: {w.name}, {requests} requests over the whole run (warm-up and window), "
                  f"{rate(run.outcome.iops, ' IOPS')} in the window under the profiler")
    for pd in PDS[:-1]:
        stats = out / f"{pd}.pstats"
        if stats.exists() and requests:
            _common.print_profile(stats, requests, f"{pd} (cProfile, its main thread's CPU)")


# ---- reporting ------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def mbs(value: float) -> str:
    return f"{value:,.0f} MB/s" if value == value else "-"


def us(value: float) -> str:
    return f"{value:,.1f}" if value == value else "-"


def throughput(name: str, f: dict | None) -> str:
    """Requests/s for 4 KiB workloads, MB/s for sequential ones."""
    if f is None:
        return "-"
    return mbs(f["mb_per_s"]) if SHAPES[name][1] else rate(f["iops"], " IOPS")


def report(results: dict[str, dict], engines: dict | None, fat: dict[str, dict] | None, cache: Cache, plan: Plan,
           out: Path) -> tuple[dict[str, float], dict[str, bool]]:
    """Print the tables and the targets, draw the plot; the ratios and whether each target was met."""
    has_fio = any("fio" in r for r in results.values())
    rows = []
    for name, r in results.items():
        p, d, f = r["pysddf"], r["direct"], r.get("fio")
        rows.append([name, throughput(name, p), throughput(name, d), f"{ratio(p['iops'], d['iops']):.2f}×",
                     *([throughput(name, f), f"{ratio(p['iops'], f['iops']):.2f}×" if f else "-"] if has_fio else []),
                     us(p["cpu_us_per_op"]), us(d["cpu_us_per_op"]),
                     *([us(f["cpu_us_per_op"]) if f else "-"] if has_fio else [])])
    print_table(f"Block I/O ({cache.mode} page cache, {plan.seconds:g} s windows, median of {plan.repeats}): pysddf = "
                "client → blk_virt → blk_driver; direct = preadv/pwritev in one Python process",
                ["workload", "pysddf", "direct", "÷ direct", *(["fio", "÷ fio"] if has_fio else []),
                 "CPU µs/req pysddf", "direct", *(["fio"] if has_fio else [])], rows)
    print_table("pysddf CPU per process in the window: µs per request (share of one core)",
                ["workload", *PDS, "all", "requests per load wake-up"],
                [[name, *(f"{r['pysddf']['cpu_s'][pd] / r['pysddf']['ops'] * 1e6:.1f} "
                          f"({r['pysddf']['cpu_s'][pd] / plan.seconds:.0%})" for pd in PDS),
                  us(r["pysddf"]["cpu_us_per_op"]),
                  f"{r['pysddf']['ops'] / max(r['pysddf']['passes'], 1):.1f}"] for name, r in results.items()])
    if engines:
        engine_table(engines)
    if fat:
        fat_table(fat, plan)
    console.print(f"cache: {cache.note}")

    def iops(name: str, who: str = "pysddf") -> float | None:
        return results.get(name, {}).get(who, {}).get("iops")

    ratios = {
        "seq_read_vs_direct": ratio(iops("seq1m-read"), iops("seq1m-read", "direct")),
        "seq_write_vs_direct": ratio(iops("seq1m-write"), iops("seq1m-write", "direct")),
        "rand4k_qd32_read_vs_direct": ratio(iops("rand4k-read-qd32"), iops("rand4k-read-qd32", "direct")),
        "rand4k_qd1_read_vs_direct": ratio(iops("rand4k-read-qd1"), iops("rand4k-read-qd1", "direct")),
        "rand4k_qd32_write_vs_direct": ratio(iops("rand4k-write-qd32"), iops("rand4k-write-qd32", "direct")),
        "rand4k_qd1_write_vs_direct": ratio(iops("rand4k-write-qd1"), iops("rand4k-write-qd1", "direct")),
        "rand4k_qd32_read_vs_fio": ratio(iops("rand4k-read-qd32"), iops("rand4k-read-qd32", "fio")),
        "seq_read_vs_fio": ratio(iops("seq1m-read"), iops("seq1m-read", "fio")),
        "fat_read_vs_pyfatfs": ratio(fat["pysddf"]["mb_per_s"], fat["pyfatfs"]["mb_per_s"]) if fat else float("nan"),
    }
    if engines:
        alone = engines["standalone"]
        ratios["engine_io_uring_vs_pool8"] = ratio(alone.get("io_uring", {}).get("iops"),
                                                   alone.get("pool-8", {}).get("iops"))
    console.print("[bold]targets:[/bold]")
    met = _common.check_targets(ratios, TARGETS)
    plot(results | ({FAT_WORKLOAD: fat} if fat else {}), engines, cache, out)
    return ratios, met


def engine_table(engines: dict) -> None:
    rows = [[f"pysddf system, driver io_threads={n}", rate(f["iops"], " IOPS"), us(f["cpu_us_per_op"]),
             " · ".join(f"{pd} {f['cpu_s'][pd] / f['ops'] * 1e6:.1f}" for pd in PDS[:-1])]
            for n, f in engines["system_io_threads"].items()]
    rows += [[f"standalone: {'driver engine, ' + key[5:] + ' threads' if key.startswith('pool') else key}",
              rate(f["iops"], " IOPS"), us(f["cpu_us_per_op"]), "-"] for key, f in engines["standalone"].items()]
    print_table(f"I/O engine: {ENGINE_WORKLOAD} (standalone: one process, driven as the driver drives its "
                "engine: requests kept in flight, completions on an eventfd)",
                ["engine", "throughput", "CPU µs/req", "CPU µs/req per PD"], rows)
    if engines["io_uring_note"]:
        console.print(f"  [yellow]io_uring not measured: {engines['io_uring_note']}[/yellow]")


def fat_table(fat: dict[str, dict], plan: Plan) -> None:
    p, base = fat["pysddf"], fat["pyfatfs"]

    def ms_per_mib(cpu_s: float, f: dict) -> str:
        return f"{cpu_s / (f['bytes'] / (1 << 20)) * 1e3:.2f}"

    per_pd = " · ".join(f"{pd} {ms_per_mib(cpu, p)}" for pd, cpu in sorted(p["cpu_s"].items(), key=lambda kv: -kv[1]))
    print_table(f"Reading a {plan.fat_file_size >> 20} MiB file once, {CHUNK >> 20} MiB per read (FAT16/32 on an "
                f"MBR partition): pysddf = load → fat (FatFs server) → blk_virt → blk_driver",
                ["", "throughput", "÷ pyfatfs", "CPU ms/MiB", "CPU ms/MiB per process"],
                [["pysddf FAT server", mbs(p["mb_per_s"]), f"{ratio(p['mb_per_s'], base['mb_per_s']):.2f}×",
                  ms_per_mib(p["cpu_s_total"], p), per_pd],
                 ["pyfatfs on the image", mbs(base["mb_per_s"]), "1.00×", ms_per_mib(base["cpu_s_total"], base), "-"]])


TARGETS = [
    Target("seq_read_vs_direct", 0.8, "1 MiB sequential reads: pysddf ÷ direct preadv"),
    Target("seq_write_vs_direct", 0.8, "1 MiB sequential writes: pysddf ÷ direct pwritev"),
    Target("rand4k_qd32_read_vs_direct", 0.5, "4 KiB random reads, depth 32: pysddf ÷ direct (32 threads)"),
    Target("rand4k_qd1_read_vs_direct", None, "4 KiB random reads, depth 1: pysddf ÷ direct"),
    Target("rand4k_qd32_write_vs_direct", None, "4 KiB random writes, depth 32: pysddf ÷ direct"),
    Target("rand4k_qd1_write_vs_direct", None, "4 KiB random writes, depth 1: pysddf ÷ direct"),
    Target("rand4k_qd32_read_vs_fio", None, "4 KiB random reads, depth 32: pysddf ÷ fio (io_uring)"),
    Target("seq_read_vs_fio", None, "1 MiB sequential reads: pysddf ÷ fio"),
    Target("engine_io_uring_vs_pool8", None, "standalone engine, 4 KiB random reads at depth 32: io_uring ÷ "
                                             "the driver's engine with 8 threads"),
    Target("fat_read_vs_pyfatfs", 0.7, "reading a file through the FAT server ÷ pyfatfs reading it on the image"),
]


def plot(results: dict[str, dict], engines: dict | None, cache: Cache, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if engines else 2, figsize=(15 if engines else 10, 5))
    panels = [([n for n in results if n.startswith("rand")], "iops", "requests/s"),
              ([n for n in results if not n.startswith("rand")], "mb_per_s", "MB/s")]
    for ax, (names, key, label) in zip(axes, panels):
        who = [k for k in ("pysddf", "direct", "fio", "pyfatfs") if any(k in results[n] for n in names)]
        width = 0.8 / max(len(who), 1)
        for i, k in enumerate(who):
            ax.bar([x + i * width for x in range(len(names))], [results[n].get(k, {}).get(key, 0) for n in names],
                   width, label=k)
        ax.set_xticks([x + width * (len(who) - 1) / 2 for x in range(len(names))], names, rotation=20, fontsize="small")
        ax.set(ylabel=label, title=f"{label} ({cache.mode} page cache)")
        if key == "iops":
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    if engines:
        ax = axes[2]
        system, alone = engines["system_io_threads"], engines["standalone"]
        xs = [int(n) for n in system]
        ax.plot(xs, [f["iops"] for f in system.values()], marker="o", label="pysddf system (driver io_threads)")
        ax.plot(xs, [alone[f"pool-{n}"]["iops"] for n in system], marker="o", label="driver engine alone")
        if "io_uring" in alone:
            ax.axhline(alone["io_uring"]["iops"], linestyle="--", color="grey", label="io_uring engine alone")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set(xlabel="I/O threads", ylabel="requests/s", title=f"{ENGINE_WORKLOAD}: I/O engine")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / "blk.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    console.print(f"wrote {path}")


@contextlib.contextmanager
def held_pm_qos(enabled: bool) -> Iterator[str]:
    if not enabled:
        yield "not held (--no-pm-qos)"
        return
    with _common.pm_qos(0) as qos:
        yield qos


def main() -> int:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to make the disk image (default: a temporary "
                                                               "directory under $TMPDIR)")
    parser.add_argument("--warm", action="store_true", help="keep the image in the page cache instead of dropping it")
    parser.add_argument("--no-fio", action="store_true", help="skip fio")
    parser.add_argument("--no-engines", action="store_true", help="skip the I/O engine comparison")
    parser.add_argument("--no-fat", action="store_true", help="skip the FAT file-read comparison")
    parser.add_argument("--no-pm-qos", action="store_true", help="do not hold /dev/cpu_dma_latency at 0")
    parser.add_argument("--profile", action="store_true", help="afterwards, profile every PD (cProfile) under "
                                                               f"{ENGINE_WORKLOAD}")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    out = _common.out_dir(args.out)
    fio = not args.no_fio and shutil.which("fio") is not None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sddf-blk-bench-", dir=args.dir) as tmp, \
            held_pm_qos(not args.no_pm_qos) as qos:
        work = Path(tmp)
        console.print(f"PM-QoS: {qos}; {_common.busy_note(0.5)}")
        disk = make_disk(str(work / "disk.img"), plan.image_size)
        cache = Cache(args.warm)
        cache.load(disk.path)
        console.print(f"image: {plan.image_size >> 20} MiB, partition of {disk.blocks * BLK_TRANSFER_SIZE >> 20} MiB at "
                      f"byte {disk.first_byte} (made in {time.monotonic() - started:.1f} s); {cache.note}")
        if not fio:
            console.print("  [yellow]fio not measured: "
                          + ("--no-fio" if args.no_fio else "fio is not installed (apt-get install fio)") + "[/yellow]")
        fd = os.open(disk.path, os.O_RDWR)
        try:
            results = measure_workloads(disk, fd, cache, plan, work, fio)
            engines = None if args.no_engines else measure_engines(disk, fd, cache, plan, work)
        finally:
            os.close(fd)
            fat = None if args.no_fat else measure_fat(cache, plan, work)
        ratios, met = report(results, engines, fat, cache, plan, out)
        if args.profile:
            profile(disk, cache, plan, work)
    console.print(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        _common.write_json(args.json, _common.jsonable(ratios),
                           _common.jsonable({"workloads": results, "engines": engines, "fat": fat, "cache": cache.mode,
                                     "cache_note": cache.note, "pm_qos": qos, "image_bytes": plan.image_size}),
                           targets=met, plan=asdict(plan) | {"quick": args.quick})
    return 0


if __name__ == "__main__":
    sys.exit(main())
