#!/usr/bin/env python3
"""Queue throughput: the sDDF net queue between two processes, against baselines measured in the same run.

* sddf net queue — the product: a producer takes buffers from the free queue and puts them on
  the active queue, the consumer takes them from active and returns them on free, 512 buffers
  circulating in queues of capacity 512, each batch moved with ``dequeue_flat``/``enqueue_flat``.
  Both ends check what they dequeue (against a ``BufferSpace``), sleep on a :class:`~sddf.channel.Waiter` after
  ``request_and_recheck`` and notify after publishing when ``signal_needed`` says so.
* bare struct rings, round trip — the pure-Python ceiling for the same work: a free and an
  active ring of the same layout, each process takes a batch from one with one ``unpack_from``
  and puts it on the other with one ``pack_into``, indices stored with ``pack_into``; no
  validation, no atomics, no signalling, both sides busy-poll. The issue's target
  (``batch32_vs_bare_ring``) is against this baseline: the same loop, hand-rolled.
* bare struct ring, one way — one such ring, the producer only packs and the consumer only
  unpacks: half the work per process, so no queue that returns its buffers can reach it;
  reported (``batch32_vs_bare_ring_one_way``), with "sddf one queue, spinning", the sddf
  library in that same one-way shape (``batch32_one_way_vs_bare_ring``).
* C ring — the machine's ceiling (bench/c/ring.c): the same ring in C with acquire/release
  indices, two busy-polling processes.
* faster-fifo — ``put_many``/``get_many`` of descriptor tuples at the same batch sizes.
* multiprocessing.Queue — ``put``/``get`` of 64-byte messages one at a time.

"batch" is the most descriptors one enqueue/dequeue call moves. Rates are descriptors (or
messages) per second received by the consumer, the median of the repeats.
"""
from __future__ import annotations

import _common  # first: keeps this file from shadowing the stdlib ``queue``

import cProfile
import json
import mmap
import multiprocessing
import os
import queue
import statistics
import struct
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import faster_fifo

from _common import Target, console, rate
from sddf.net.queue import DESC_SIZE, NET_BUFFER_SIZE, BufferSpace, NetConsumer, NetProducer, fill_free, queue_size
from sddf.shm import Region, round_to_pages
from sddf.channel import ChannelEnd, ChannelEndFds, Waiter, channel_pair

CAPACITY = 512
MP_MESSAGE = bytes(64)
SLEEP_TIMEOUT_S = 0.05  # blocked ends wake this often to see whether the run is over
PRODUCER_GRACE_S = 0.05  # producers outlast the consumer's window so it never starves at the end
CHECK_CLOCK_EVERY = 64  # steps between clock reads while work keeps coming

Step = Callable[[], int]  # one batch of work; returns the descriptors moved (0: none available)


class System(Protocol):
    """A queue under test, set up in the parent; forked children build their ends' steps."""

    name: str
    key: str

    def producer(self) -> Step: ...
    def consumer(self) -> Step: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Plan:
    """Which batch sizes, how long each measurement runs (after a warm-up), how many times."""

    batches: list[int]
    duration: float
    warmup: float
    repeats: int


QUICK = Plan(batches=[1, 32], duration=0.3, warmup=0.1, repeats=3)
FULL = Plan(batches=[1, 8, 32, 128], duration=2.0, warmup=0.2, repeats=3)


def drive(step: Step, start: float, stop: float) -> tuple[int, float]:
    """Run ``step`` until ``stop``; return the descriptors moved from ``start`` on and the seconds that took."""
    count = calls = 0
    t0 = counted_from = None
    while True:
        moved = step()
        count += moved
        calls += 1
        if moved and calls % CHECK_CLOCK_EVERY:
            continue
        now = time.monotonic()
        if t0 is None and now >= start:
            t0, counted_from = now, count
        if now >= stop:
            assert t0 is not None and counted_from is not None
            return count - counted_from, now - t0


# ---- the systems: each is set up in the parent, and forked children call producer()/consumer() ----

class SddfNet:
    """The net queue pair with sDDF signalling; both processes run the same forwarding loop."""

    name = "sddf net queue"
    key = "sddf_net_queue"

    def __init__(self, batch: int) -> None:
        self.batch = batch
        size = round_to_pages(queue_size(CAPACITY))
        self.free, self.active = Region.create("free", size), Region.create("active", size)
        self.fds = channel_pair()
        fill = NetProducer("free", self.free.view, CAPACITY)
        fill_free(fill, self.buffers().addresses())
        del fill  # releases its pointer into the region

    def producer(self) -> Step:
        return self._forward(NetConsumer("free", self.free.view, CAPACITY, self.buffers()),
                             NetProducer("active", self.active.view, CAPACITY), self.fds[0])

    def consumer(self) -> Step:
        return self._forward(NetConsumer("active", self.active.view, CAPACITY, self.buffers()),
                             NetProducer("free", self.free.view, CAPACITY), self.fds[1])

    @staticmethod
    def buffers() -> BufferSpace:
        """What both ends check against: whole buffers of the CAPACITY-buffer data region."""
        return BufferSpace([(0, CAPACITY * NET_BUFFER_SIZE)])

    def _forward(self, src: NetConsumer, dst: NetProducer, fds: ChannelEndFds) -> Step:
        """Move up to a batch from ``src`` to ``dst``, notify the peer if it asked; sleep when ``src`` is empty."""
        end = ChannelEnd.attach(fds)
        waiter = Waiter()
        waiter.add_notification(0, end.notification)
        batch, recheck = self.batch, src.request_and_recheck

        def step() -> int:
            descs = src.dequeue_flat(batch)  # the batch API for forwarding descriptors unchanged
            if descs:
                moved = dst.enqueue_flat(descs)  # always fits: there are only CAPACITY buffers
                if dst.signal_needed():
                    end.notify()
                return moved
            if not recheck():
                waiter.wait(SLEEP_TIMEOUT_S)
            return 0

        return step

    def close(self) -> None:
        a, b = self.fds
        for fd in {a.recv_eventfd, a.send_eventfd, a.words_fd, b.words_fd}:
            os.close(fd)
        self.free.close()
        self.active.close()


class BareRing:
    """One ring of the same layout written with plain ``struct`` calls, both sides spinning.

    Index stores with ``pack_into`` can be read torn by the peer; each step moves exactly
    one whole batch and skips index values that imply more than the capacity, which keeps
    this baseline running (it is a throughput ceiling, not a correct queue)."""

    name = "bare struct ring, one way"
    key = "bare_ring"
    INDEX = struct.Struct("<H")

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.ring = mmap.mmap(-1, queue_size(CAPACITY))  # anonymous and shared across fork
        self.descs = struct.Struct("<" + "QHB5x" * batch)

    def producer(self) -> Step:
        ring, index, descs, batch = self.ring, self.INDEX, self.descs, self.batch
        flat = tuple(x for i in range(batch) for x in (i * NET_BUFFER_SIZE, 64, 0))
        tail = 0

        def step() -> int:
            nonlocal tail
            used = (tail - index.unpack_from(ring, 2)[0]) & 0xFFFF
            if used > CAPACITY - batch:
                return 0
            descs.pack_into(ring, 8 + (tail % CAPACITY) * DESC_SIZE, *flat)
            tail = (tail + batch) & 0xFFFF
            index.pack_into(ring, 0, tail)
            return batch

        return step

    def consumer(self) -> Step:
        ring, index, descs, batch = self.ring, self.INDEX, self.descs, self.batch
        head = 0

        def step() -> int:
            nonlocal head
            if not 0 < (index.unpack_from(ring, 0)[0] - head) & 0xFFFF <= CAPACITY:
                return 0
            descs.unpack_from(ring, 8 + (head % CAPACITY) * DESC_SIZE)
            head = (head + batch) & 0xFFFF
            index.pack_into(ring, 2, head)
            return batch

        return step

    def close(self) -> None:
        self.ring.close()


class BareRingPair(BareRing):
    """The sddf loop's shape (a free and an active ring, CAPACITY buffers, each process
    takes a batch from one ring and puts it on the other) with the bare ring's struct calls."""

    name = "bare struct rings, round trip"
    key = "bare_ring_pair"

    def __init__(self, batch: int) -> None:
        super().__init__(batch)
        self.free = mmap.mmap(-1, queue_size(CAPACITY))
        all_descs = struct.Struct("<" + "QHB5x" * CAPACITY)
        all_descs.pack_into(self.free, 8, *(x for i in range(CAPACITY) for x in (i * NET_BUFFER_SIZE, 0, 0)))
        self.INDEX.pack_into(self.free, 0, CAPACITY)

    def producer(self) -> Step:
        return self._forward(self.free, self.ring)

    def consumer(self) -> Step:
        return self._forward(self.ring, self.free)

    def _forward(self, src: mmap.mmap, dst: mmap.mmap) -> Step:
        index, descs, batch = self.INDEX, self.descs, self.batch
        head, tail = index.unpack_from(src, 2)[0], index.unpack_from(dst, 0)[0]

        def step() -> int:
            nonlocal head, tail
            if not 0 < (index.unpack_from(src, 0)[0] - head) & 0xFFFF <= CAPACITY:
                return 0
            flat = descs.unpack_from(src, 8 + (head % CAPACITY) * DESC_SIZE)
            head = (head + batch) & 0xFFFF
            index.pack_into(src, 2, head)
            descs.pack_into(dst, 8 + (tail % CAPACITY) * DESC_SIZE, *flat)  # fits: CAPACITY buffers
            tail = (tail + batch) & 0xFFFF
            index.pack_into(dst, 0, tail)
            return batch

        return step

    def close(self) -> None:
        super().close()
        self.free.close()


class SddfOneWay:
    """The sddf net queue in the one-way bare ring's shape (one queue, the producer enqueues
    fixed descriptors, the consumer dequeues and validates, both spin, no signalling)."""

    name = "sddf one queue, spinning"
    key = "sddf_one_way"

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.region = Region.create("active", round_to_pages(queue_size(CAPACITY)))

    def producer(self) -> Step:
        active = NetProducer("active", self.region.view, CAPACITY)
        descs = tuple(x for i in range(self.batch) for x in (i * NET_BUFFER_SIZE, 64, 0))
        return lambda: active.enqueue_flat(descs)

    def consumer(self) -> Step:
        active = NetConsumer("active", self.region.view, CAPACITY, SddfNet.buffers())
        batch = self.batch
        return lambda: len(active.dequeue_flat(batch)) // 3

    def close(self) -> None:
        self.region.close()


class FasterFifo:
    """faster-fifo's put_many/get_many of descriptor tuples, sized to hold about CAPACITY of them."""

    name = "faster-fifo"
    key = "faster_fifo"

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.queue = faster_fifo.Queue(max_size_bytes=CAPACITY * 32)  # a pickled descriptor is ~23 bytes

    def producer(self) -> Step:
        descs = [(i * NET_BUFFER_SIZE, 64, 0) for i in range(self.batch)]
        q, batch = self.queue, self.batch

        def step() -> int:
            try:
                q.put_many(descs, timeout=SLEEP_TIMEOUT_S)
            except queue.Full:
                return 0
            return batch

        return step

    def consumer(self) -> Step:
        q, batch = self.queue, self.batch

        def step() -> int:
            try:
                return len(q.get_many(timeout=SLEEP_TIMEOUT_S, max_messages_to_get=batch))
            except queue.Empty:
                return 0

        return step

    def close(self) -> None:
        self.queue.close()


class MpQueue:
    """multiprocessing.Queue of 64-byte messages, one put/get at a time (batch is ignored)."""

    name = "multiprocessing.Queue"
    key = "mp_queue"

    def __init__(self, batch: int) -> None:
        self.queue = multiprocessing.get_context("fork").Queue(maxsize=CAPACITY)

    def producer(self) -> Step:
        q = self.queue
        q.cancel_join_thread()  # exit without waiting for a consumer that has stopped

        def step() -> int:
            try:
                q.put(MP_MESSAGE, timeout=SLEEP_TIMEOUT_S)
            except queue.Full:
                return 0
            return 1

        return step

    def consumer(self) -> Step:
        q = self.queue

        def step() -> int:
            try:
                q.get(timeout=SLEEP_TIMEOUT_S)
            except queue.Empty:
                return 0
            return 1

        return step

    def close(self) -> None:
        self.queue.close()


PYTHON_SYSTEMS = (SddfNet, BareRing, FasterFifo, SddfOneWay, BareRingPair)  # at every batch size
ROLES = ("producer", "consumer")
CPUS = _common.two_cpus()  # the producer runs on the first, the consumer on the second


def _worker(make: Callable[[], Step], role: str, barrier, results, plan: Plan,
            profile: Path | None) -> None:
    """A forked child: attach, line up with the peer, run for the plan's window, report."""
    try:
        if CPUS:
            os.sched_setaffinity(0, {CPUS[ROLES.index(role)]})
        step = make()
        barrier.wait(timeout=30)
        start = time.monotonic() + plan.warmup
        stop = start + plan.duration + (PRODUCER_GRACE_S if role == "producer" else 0.0)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        count, seconds = drive(step, start, stop)
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile / f"{role}.pstats"))
        results.put((role, count, seconds))
    except BaseException:
        results.put((role, None, traceback.format_exc()))


def run_pair(system: System, plan: Plan, profile: Path | None = None) -> dict[str, tuple[int, float]]:
    """Run the system's producer and consumer in two forked processes; return role → (count, seconds)."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(getattr(system, role), role, barrier, results, plan, profile),
                         name=f"{system.key}-{role}", daemon=True) for role in ROLES]
    got: dict[str, tuple[int, float]] = {}
    try:
        for p in procs:
            p.start()
        for _ in procs:
            role, count, seconds = results.get(timeout=plan.warmup + plan.duration + 60)
            if count is None:
                raise RuntimeError(f"{system.name} {role} failed:\n{seconds}")
            got[role] = (count, seconds)
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        results.close()
    return got


def measure_python(cls: Callable[[int], System], batch: int, plan: Plan, attempts: int = 3) -> float:
    """One run of a Python system: descriptors per second the consumer received.

    A run that moves nothing is retried: the bare rings can wedge for good when a peer reads an
    index half-written by ``pack_into`` (that is what the atomics in the sddf queues prevent)."""
    for _ in range(attempts):
        system = cls(batch)
        try:
            count, seconds = run_pair(system, plan)["consumer"]
        finally:
            system.close()
        if count:
            return count / seconds
        console.print(f"  [yellow]{system.name} at batch {batch} moved nothing in {seconds:.2f} s; "
                      f"running it again[/yellow]")
    raise RuntimeError(f"{system.name} at batch {batch} moved nothing in {attempts} runs")


def measure_c(binary: Path, batch: int, plan: Plan) -> float:
    out = subprocess.run([str(binary), str(batch), str(plan.duration), str(plan.warmup),
                          *(str(cpu) for cpu in CPUS or ())],
                         check=True, capture_output=True, text=True, timeout=plan.duration + 60)
    return json.loads(out.stdout)["rate"]


Samples = dict[str, dict[int, list[float]]]  # system key → batch → the rate of each repeat


def collect(plan: Plan, c_binary: Path) -> Samples:
    """Every system at every batch size, ``plan.repeats`` times, interleaved so drift hits all alike."""
    samples: Samples = {}

    def record(key: str, batch: int, value: float) -> None:
        samples.setdefault(key, {}).setdefault(batch, []).append(value)
        console.print(f"  [dim]{key:<16} batch {batch:>3}: {rate(value, ' desc/s')}[/dim]")

    for _ in range(plan.repeats):
        for batch in plan.batches:
            for cls in PYTHON_SYSTEMS:
                record(cls.key, batch, measure_python(cls, batch, plan))
            record("c_ring", batch, measure_c(c_binary, batch, plan))
        record(MpQueue.key, 1, measure_python(MpQueue, 1, plan))
    return samples


NAMES = {cls.key: cls.name for cls in (*PYTHON_SYSTEMS, MpQueue)} | {"c_ring": "C ring (gcc -O2)"}
HEADLINE = 32
TARGETS = [
    Target("batch32_vs_mp_queue", 20.0, "sddf at batch 32 ÷ multiprocessing.Queue"),
    Target("batch32_vs_bare_ring", 0.7, "sddf at batch 32 ÷ bare struct rings doing the same round trip"),
    Target("batch32_vs_c_ring", None, "sddf at batch 32 ÷ C ring at batch 32"),
    Target("batch32_vs_faster_fifo", None, "sddf at batch 32 ÷ faster-fifo at batch 32"),
    Target("batch32_vs_bare_ring_one_way", None, "sddf (round trip) ÷ the one-way bare ring"),
    Target("batch32_one_way_vs_bare_ring", None, "sddf one queue, spinning ÷ the one-way bare ring"),
]


def report(figures: dict[str, dict[int, float]], plan: Plan, out: Path) -> dict[str, float]:
    """Print the tables and the targets, save the plot; return the headline ratios."""
    ours = figures[SddfNet.key]
    mp = figures[MpQueue.key][1]
    _common.print_table(
        f"descriptors/s (median of {plan.repeats} × {plan.duration:g} s), capacity {CAPACITY}",
        ["system", *(f"batch {b}" for b in plan.batches)],
        [[NAMES[key], *(rate(by_batch[b]) if b in by_batch else "one at a time" for b in plan.batches)]
         for key, by_batch in figures.items()])
    baselines = [k for k in figures if k != SddfNet.key]
    _common.print_table(
        "sddf net queue ÷ baseline",
        ["baseline", *(f"batch {b}" for b in plan.batches)],
        [[NAMES[k], *(f"{ours[b] / figures[k].get(b, mp):.3f}×" for b in plan.batches)] for k in baselines])
    ratios = {
        "batch32_vs_mp_queue": ours[HEADLINE] / mp,
        "batch32_vs_bare_ring": ours[HEADLINE] / figures[BareRingPair.key][HEADLINE],
        "batch32_vs_c_ring": ours[HEADLINE] / figures["c_ring"][HEADLINE],
        "batch32_vs_faster_fifo": ours[HEADLINE] / figures[FasterFifo.key][HEADLINE],
        "batch32_vs_bare_ring_one_way": ours[HEADLINE] / figures[BareRing.key][HEADLINE],
        "batch32_one_way_vs_bare_ring": figures[SddfOneWay.key][HEADLINE] / figures[BareRing.key][HEADLINE],
    }
    console.print("[bold]targets (issue):[/bold]")
    _common.check_targets(ratios, TARGETS)
    _common.save_plot(out / "queue.png",
                      {NAMES[k]: (sorted(v), [v[b] for b in sorted(v)]) for k, v in figures.items()},
                      title=f"Two-process queue throughput (capacity {CAPACITY})",
                      xlabel="batch size (descriptors per call)", ylabel="descriptors / s",
                      dotted=[NAMES[SddfOneWay.key], NAMES[BareRing.key]])  # the one-way shape
    return ratios


def profile_ours(batch: int, plan: Plan, out: Path) -> None:
    """cProfile both sDDF processes at ``batch`` and print where the time goes per descriptor."""
    where = _common.out_dir(out / "profile")
    system = SddfNet(batch)
    try:
        got = run_pair(system, Plan([batch], plan.duration, 0.0, 1), profile=where)
    finally:
        system.close()
    for role in ROLES:
        count, seconds = got[role]
        console.print(f"{role}: {count} descriptors in {seconds:.2f} s under the profiler "
                      f"({seconds / count * 1e6:.3f} µs wall each)")
        _common.print_profile(where / f"{role}.pstats", count, f"sddf {role}, batch {batch}")


def main() -> None:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--profile", action="store_true",
                        help=f"instead of comparing, cProfile the sddf producer and consumer at batch {HEADLINE}")
    parser.add_argument("--duration", type=float, help="seconds per measurement (overrides the plan)")
    parser.add_argument("--repeats", type=int, help="runs per point (overrides the plan)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    plan = Plan(plan.batches, args.duration or plan.duration, plan.warmup, args.repeats or plan.repeats)
    out = _common.out_dir(args.out)
    with _common.pm_qos() as qos:
        console.print(f"PM-QoS: {qos}; producer/consumer pinned to CPUs {CPUS}; {_common.busy_note()}")
        if args.profile:
            profile_ours(HEADLINE, plan, out)
            return
        console.print(plan)
        c_binary = _common.build_c(Path(__file__).resolve().parent / "c" / "ring.c", out)
        samples = collect(plan, c_binary)
    figures = {key: {b: statistics.median(v) for b, v in by_batch.items()} for key, by_batch in samples.items()}
    ratios = report(figures, plan, out)
    if args.json:
        _common.write_json(args.json, ratios,
                           {k: {str(b): r for b, r in v.items()} for k, v in figures.items()},
                           samples={k: {str(b): v for b, v in by_batch.items()} for k, by_batch in samples.items()},
                           units="descriptors (messages for mp_queue) per second; figures are medians",
                           plan={"batches": plan.batches, "duration_s": plan.duration,
                                 "repeats": plan.repeats, "capacity": CAPACITY})


if __name__ == "__main__":
    main()
