"""What the block benchmark runs: its workloads and the load-generating block client PD.

A :class:`Workload` is a closed loop: ``depth`` requests of ``blocks`` 4 KiB blocks each are kept
in flight, reads or writes, at random block numbers (aligned to ``blocks``, seeded) or sequential
ones (wrapping from the partition's end to its start). It runs ``warmup_s`` untimed,
then counts what completes in a window of ``seconds``. A write workload then sends one FLUSH
(``fdatasync`` for the baseline), outside the window.

:class:`BlkLoad` is the client PD (``bench.blk_components:BlkLoad``, wired by
bench/systems/blk_bench.py): it runs its one workload through the virtualiser and the driver,
then writes one line ``<pd>: BLK-BENCH-RESULT {json}`` (see :class:`Outcome`) on stdout (and
``<pd>: BLK-BENCH-READY …`` when its partition is ready and the warm-up starts). The
monitor's stdout is the PD's, so the benchmark reads the result there. Any response but OK is
a fault naming the request. PD processes import this module, so the monitor (and through it
every PD) needs the repository root on ``PYTHONPATH``.

bench/blk_engines.py runs the same workloads on the image file from one process.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from sddf.blk.client import BlkClient, Completion
from sddf.blk.config import BlkClientConfig
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus
from sddf.component import Component

RESULT_PREFIX = "BLK-BENCH-RESULT "
READY_LINE = "BLK-BENCH-READY"  # logged when the partition is ready and the warm-up starts


@dataclass
class Workload:
    """One closed-loop block workload; see the module docstring."""

    name: str
    write: bool
    sequential: bool
    blocks: int
    depth: int
    seconds: float
    warmup_s: float = 0.2
    seed: int = 1

    @property
    def request_bytes(self) -> int:
        return self.blocks * BLK_TRANSFER_SIZE


#: name -> (write, sequential, blocks per request, queue depth)
SHAPES: dict[str, tuple[bool, bool, int, int]] = {
    "rand4k-read-qd1": (False, False, 1, 1),
    "rand4k-read-qd32": (False, False, 1, 32),
    "rand4k-write-qd1": (True, False, 1, 1),
    "rand4k-write-qd32": (True, False, 1, 32),
    "seq1m-read": (False, True, 256, 4),
    "seq1m-write": (True, True, 256, 4),
}


def workload(name: str, seconds: float, warmup_s: float = 0.2) -> Workload:
    """The workload called ``name`` (a key of :data:`SHAPES`)."""
    if name not in SHAPES:
        raise ValueError(f"unknown block workload {name!r}; choose from {', '.join(SHAPES)}")
    write, sequential, blocks, depth = SHAPES[name]
    return Workload(name, write, sequential, blocks, depth, seconds, warmup_s)


def block_numbers(w: Workload, partition_blocks: int) -> Iterator[int]:
    """The first block of each request ``w`` makes, in order, on a partition of ``partition_blocks``."""
    span = partition_blocks // w.blocks  # places a request fits, aligned to its size
    if span <= 0:
        raise ValueError(f"workload {w.name}: a partition of {partition_blocks} blocks holds no "
                         f"request of {w.blocks} blocks")
    if w.sequential:
        i = 0
        while True:
            yield i * w.blocks
            i = (i + 1) % span
    rng = random.Random(w.seed)
    pick = rng.randrange
    while True:
        yield pick(span) * w.blocks


@dataclass
class Outcome:
    """What one run of a workload did: requests completed inside the timed window
    [t0_ns, t1_ns) (CLOCK_MONOTONIC; for a :class:`Workload`, t1 = t0 + its seconds), and how long
    the FLUSH after a write workload took."""

    workload: str
    ops: int
    bytes: int
    t0_ns: int
    t1_ns: int
    flush_s: float = 0.0
    passes: int = 0  # handler passes that completed requests in the window (PD only)
    cpu_s: float = 0.0  # CPU the process used in the window (direct runs; a system's is sampled per PD)
    check: int = 0  # CRC-32 of the data read (whole-file reads: bench/fat_components.py)

    @property
    def seconds(self) -> float:
        return (self.t1_ns - self.t0_ns) / 1e9

    @property
    def iops(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


class Window:
    """A warm-up of ``warmup_s`` from ``now_ns``, then a timed window of ``seconds`` that starts at
    the first completion after the warm-up: counts the requests that complete inside it."""

    def __init__(self, warmup_s: float, seconds: float, now_ns: int) -> None:
        self.start_at = now_ns + int(warmup_s * 1e9)
        self.length = int(seconds * 1e9)
        self.t0 = 0
        self.ops = self.passes = 0

    def completed(self, now_ns: int, count: int) -> bool:
        """``count`` requests completed at ``now_ns``; whether to go on issuing requests."""
        if not self.t0:
            if now_ns >= self.start_at:
                self.t0 = now_ns  # these completions belong to the warm-up
            return True
        if now_ns >= self.t0 + self.length:
            return False
        self.ops += count
        self.passes += count > 0
        return True

    def outcome(self, w: Workload, flush_s: float = 0.0, cpu_s: float = 0.0) -> Outcome:
        return Outcome(w.name, self.ops, self.ops * w.request_bytes, self.t0, self.t0 + self.length, flush_s,
                       self.passes, cpu_s)


def parse_result(line: str) -> Outcome | None:
    """The :class:`Outcome` a PD's result line carries (None if ``line`` is not one)."""
    at = line.find(RESULT_PREFIX)
    return None if at < 0 else Outcome(**json.loads(line[at + len(RESULT_PREFIX):]))


# ---- the client PD ----------------------------------------------------------------------------
@dataclass
class BlkLoadConfig:
    blk: BlkClientConfig
    workload: Workload


class LoadError(Exception):
    """The virtualiser answered a request with an error, or the workload does not fit the grant."""


WAITING, RUNNING, DRAINING, FLUSHING, DONE = range(5)


class BlkLoad(Component):
    """Runs its workload as a block client once its partition is ready; reports an :class:`Outcome`."""

    kind = "blk.client"
    Config = BlkLoadConfig

    def init(self) -> None:
        w: Workload = self.config.workload
        self.blk = BlkClient(self.name, self.regions, self.config.blk, self.refuse)
        if w.depth > self.blk.capacity or w.depth * w.request_bytes > len(self.blk.data):
            raise LoadError(f"{self.name}: workload {w.name} keeps {w.depth} requests of {w.request_bytes} bytes "
                            f"in flight: the grant has {self.blk.capacity} queue slots and "
                            f"{len(self.blk.data)} bytes of data")
        if w.write:
            self.blk.data[:w.depth * w.request_bytes] = os.urandom(w.depth * w.request_bytes)
        self.free = [i * w.request_bytes for i in range(w.depth)]
        self.state = WAITING
        self.window = Window(w.warmup_s, w.seconds, 0)
        self.flush_at = 0
        self.blocks: Iterator[int] = iter(())
        self._begin()

    def notified(self, ch: int) -> None:
        if ch != self.blk.channel:
            return
        if self.state == WAITING:
            self._begin()
            return
        now = time.monotonic_ns()
        done = self.blk.completions()
        for c in done:
            self._check(c)
            self.free.append(c.request.offset)
        if self.state == RUNNING:
            if self.window.completed(now, len(done)):
                self._submit()
            else:
                self.state = DRAINING
        self._finish()

    def _begin(self) -> None:
        """Start the warm-up once the partition is ready (the virtualiser notifies us when it is)."""
        info = self.blk.storage_info()
        if info is None:
            return
        w: Workload = self.config.workload
        self.log(f"{READY_LINE}: partition of {info.capacity} blocks; {w.name}: warm-up {w.warmup_s:g} s, "
                 f"then {w.seconds:g} s timed")
        self.blocks = block_numbers(w, info.capacity)
        self.window = Window(w.warmup_s, w.seconds, time.monotonic_ns())
        self.state = RUNNING
        self._submit()

    def _finish(self) -> None:
        """Once the window is over and every request answered: FLUSH after writes, then report."""
        if self.blk.outstanding or self.state not in (DRAINING, FLUSHING):
            return
        w: Workload = self.config.workload
        if self.state == DRAINING and w.write:
            self.state, self.flush_at = FLUSHING, time.monotonic_ns()
            self.blk.flush()
            self.deferred_notify(self.blk.channel)
            return
        flush_s = (time.monotonic_ns() - self.flush_at) / 1e9 if w.write else 0.0
        self.state = DONE
        self.log(RESULT_PREFIX + json.dumps(asdict(self.window.outcome(w, flush_s))))

    def _submit(self) -> None:
        """Keep ``depth`` requests in flight."""
        w: Workload = self.config.workload
        code = BlkReqCode.WRITE if w.write else BlkReqCode.READ
        submit, free, blocks = self.blk.submit, self.free, self.blocks
        sent = 0
        while free:
            offset = free.pop()
            if submit(code, offset, next(blocks), w.blocks) is None:
                free.append(offset)
                break
            sent += 1
        if sent:
            self.deferred_notify(self.blk.channel)

    def _check(self, c: Completion) -> None:
        if c.status != BlkRespStatus.OK:
            status = BlkRespStatus(c.status).name if c.status <= max(BlkRespStatus) else c.status
            raise LoadError(f"{self.name}: request id={c.id} {c.request} was answered with status {status}")
