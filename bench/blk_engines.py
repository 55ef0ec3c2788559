"""Block workloads (bench/blk_components.py) run on the image file from this one process.

* :func:`run_direct` — the baseline: ``os.preadv``/``os.pwritev`` in a loop, with ``depth``
  threads each keeping one request in flight when the depth is over 1 (a thread pool as large
  as the queue depth), all taking the next request from one shared stream.
* :func:`run_engine` — an I/O engine the block driver could use, driven the way the driver
  drives its own: ``depth`` requests in flight into one buffer, completions announced
  on an eventfd that the loop waits on, new requests issued as old ones complete.
  :class:`DriverEngine` is the driver's engine (:mod:`sddf.blk.io`: N C threads running
  pread/pwrite); :class:`UringEngine` is io_uring through the ``liburing`` PyPI
  binding (readv/writev straight into the buffer, completions via a registered eventfd).
"""
from __future__ import annotations

import os
import select
import threading
import time
from typing import Iterator, Protocol

from bench.blk_components import Outcome, Window, Workload, block_numbers
from sddf.blk import io
from sddf.blk.queue import BLK_TRANSFER_SIZE


def _sync(fd: int, w: Workload) -> float:
    """After a write workload, ``fdatasync`` (outside the window); how long it took."""
    if not w.write:
        return 0.0
    start = time.monotonic()
    os.fdatasync(fd)
    return time.monotonic() - start


def _offsets(w: Workload, first_byte: int, partition_blocks: int) -> Iterator[int]:
    """The byte offset in the file of each request ``w`` makes on the partition at ``first_byte``."""
    return (first_byte + block * BLK_TRANSFER_SIZE for block in block_numbers(w, partition_blocks))


def _check(w: Workload, moved: int) -> None:
    if moved != w.request_bytes:
        raise OSError(f"{w.name}: a request moved {moved} of {w.request_bytes} bytes")


# ---- the baseline ---------------------------------------------------------------------------------
def run_direct(w: Workload, fd: int, first_byte: int, partition_blocks: int) -> Outcome:
    """Run ``w`` with blocking ``os.preadv``/``os.pwritev`` on ``fd``; see the module docstring."""
    offsets = _offsets(w, first_byte, partition_blocks)
    move = os.pwritev if w.write else os.preadv
    lock = threading.Lock()
    window = Window(w.warmup_s, w.seconds, time.monotonic_ns())
    cpu_at = [0, 0]  # process CPU when the window opened, and when the last thread stopped
    clock, cpu = time.monotonic_ns, time.process_time_ns

    def loop() -> None:
        buf = [memoryview(bytearray(os.urandom(w.request_bytes) if w.write else w.request_bytes))]
        while True:
            with lock:
                offset = next(offsets)
            _check(w, move(fd, buf, offset))
            with lock:
                opened = window.t0
                going = window.completed(clock(), 1)
                if not opened and window.t0:
                    cpu_at[0] = cpu()
            if not going:
                break
        cpu_at[1] = max(cpu_at[1], cpu())

    if w.depth == 1:
        loop()
    else:
        threads = [threading.Thread(target=loop, name=f"direct-{i}") for i in range(w.depth)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return window.outcome(w, _sync(fd, w), (cpu_at[1] - cpu_at[0]) / 1e9)


# ---- driver-shaped engines ------------------------------------------------------------------------
class Engine(Protocol):
    """Requests go in by slot (a ``request_bytes`` piece of one buffer); completions come out."""

    def submit(self, slot: int, offset: int) -> None: ...

    def commit(self) -> None:
        """Start what was submitted since the last commit."""

    def wait(self) -> list[tuple[int, int]]:
        """Block until something completed: (slot, bytes moved or -errno) of each completion."""

    def close(self) -> None: ...


class DriverEngine:
    """The block driver's engine (:class:`sddf.blk.io.IoEngine`: C threads running pread/pwrite),
    its completions announced on its eventfd."""

    def __init__(self, fd: int, w: Workload, buffer: memoryview, threads: int) -> None:
        self._fd, self._bytes = fd, w.request_bytes
        self._code = io.WRITE if w.write else io.READ
        self._io = io.IoEngine(threads, w.depth, [buffer])

    def submit(self, slot: int, offset: int) -> None:
        self._io.submit(slot, self._code, self._fd, 0, slot * self._bytes, self._bytes, offset)

    def commit(self) -> None:
        pass

    def wait(self) -> list[tuple[int, int]]:
        select.select([self._io.eventfd], [], [])
        self._io.acknowledge()
        return [(slot, done * BLK_TRANSFER_SIZE if status == io.OK else -1)
                for slot, status, done in self._io.completions()]

    def close(self) -> None:
        os.close(self._io.eventfd)


class UringEngine:
    """io_uring through the ``liburing`` binding: readv/writev SQEs naming the buffer,
    submitted once per batch, completions announced on an eventfd registered with the ring.

    The binding's ``cqe[i]`` indexes past the end of the completion ring when it wraps (it does
    not mask the index), so completions are walked with ``CqeIter``, which does."""

    def __init__(self, fd: int, w: Workload, buffer: memoryview) -> None:
        import liburing as uring  # optional: only this engine needs it

        self._u = uring
        self._fd = fd
        self._prep = uring.io_uring_prep_writev if w.write else uring.io_uring_prep_readv
        # an Iovec holds raw pointers into the buffer: the slices must outlive it (they do: both are ours)
        self._slots = [buffer[i * w.request_bytes:(i + 1) * w.request_bytes] for i in range(w.depth)]
        self._iovecs = [uring.Iovec([s]) for s in self._slots]
        self._ring, self._cqe = uring.Ring(), uring.Cqe()
        if uring.io_uring_queue_init(2 * w.depth, self._ring) not in (0, None):
            raise OSError("io_uring_queue_init failed")
        self._event = os.eventfd(0, os.EFD_CLOEXEC)
        uring.io_uring_register_eventfd(self._ring, self._event)

    def submit(self, slot: int, offset: int) -> None:
        u = self._u
        sqe = u.io_uring_get_sqe(self._ring)
        self._prep(sqe, self._fd, self._iovecs[slot], offset)
        u.io_uring_sqe_set_data64(sqe, slot)

    def commit(self) -> None:
        self._u.io_uring_submit(self._ring)

    def wait(self) -> list[tuple[int, int]]:
        u, ring, cqe = self._u, self._ring, self._cqe
        os.eventfd_read(self._event)
        done = []
        for _ in u.CqeIter(ring, cqe):
            entry = cqe[0]
            done.append((u.io_uring_cqe_get_data64(entry), entry.res))
        if done:
            u.io_uring_cq_advance(ring, len(done))
        return done

    def close(self) -> None:
        self._u.io_uring_queue_exit(self._ring)
        os.close(self._event)


def uring_problem() -> str | None:
    """Why the io_uring engine cannot run here (None if it can)."""
    try:
        import liburing as uring
    except ImportError:
        return "the liburing binding is not installed (pip install liburing)"
    ring = uring.Ring()
    try:
        uring.io_uring_queue_init(2, ring)
    except (OSError, RuntimeError) as exc:
        return f"io_uring is not available: {exc}"
    uring.io_uring_queue_exit(ring)
    return None


def run_engine(w: Workload, fd: int, first_byte: int, partition_blocks: int, engine: str,
               threads: int = 0) -> Outcome:
    """Run ``w`` through ``engine`` (``pool`` with ``threads`` threads, or ``uring``); see the
    module docstring."""
    buffer = memoryview(bytearray(os.urandom(w.depth * w.request_bytes) if w.write else w.depth * w.request_bytes))
    engine_: Engine = DriverEngine(fd, w, buffer, threads) if engine == "pool" else UringEngine(fd, w, buffer)
    try:
        outcome = _closed_loop(w, engine_, _offsets(w, first_byte, partition_blocks))
    finally:
        engine_.close()
    outcome.flush_s = _sync(fd, w)
    return outcome


def _closed_loop(w: Workload, io: Engine, offsets: Iterator[int]) -> Outcome:
    """Keep ``w.depth`` requests in flight through ``io`` until the window closes, then drain."""
    window = Window(w.warmup_s, w.seconds, time.monotonic_ns())
    for slot in range(w.depth):
        io.submit(slot, next(offsets))
    io.commit()
    in_flight, going, cpu_from, cpu_to = w.depth, True, 0, 0
    while in_flight:
        done = io.wait()
        in_flight -= len(done)
        for _slot, moved in done:
            _check(w, moved)
        opened = window.t0
        if going:
            going = window.completed(time.monotonic_ns(), len(done))
            if not opened and window.t0:
                cpu_from = time.process_time_ns()
            if not going:
                cpu_to = time.process_time_ns()
        if going:
            for slot, _moved in done:
                io.submit(slot, next(offsets))
            io.commit()
            in_flight += len(done)
    return window.outcome(w, cpu_s=(cpu_to - cpu_from) / 1e9)
