#!/usr/bin/env python3
"""Hop latency baseline: a ring of N plain Python processes passing one descriptor around.

usage: python bench/hops_bare.py N ROUNDS WARMUP [--trace]     ($HOPS_CPUS="0,1": stage k on the k-th, round robin)

No framework: N processes (stage 0 is this one, it forks stages 1..N-1), N queues and N
eventfds, all made before the fork. Queue i carries from stage i to stage (i+1) % N and has
sDDF's net queue layout in one shared anonymous mapping: an 8-byte header {u16 tail @0
(producer), u16 head @2 (consumer), u32 consumer_signalled @4}, then CAPACITY 16-byte
descriptors {u64 io_or_offset, u16 len, u8 oid, 5 pad}; indices run free as u16, slot =
index % CAPACITY, each side publishes its index with a release store and reads its peer's
with an acquire load (sddf.atomic's C calls, the ones the framework uses).

Signalling is sDDF's: the consumer, before sleeping, stores consumer_signalled = 0 (request),
fences (seq_cst) and re-checks the queue, cancelling (storing 1) and processing instead if it
is not empty; the producer, after publishing its tail, fences and, if consumer_signalled is 0,
stores 1 and writes 1 to the consumer's eventfd. Waiting is a blocking read of the stage's
own eventfd. Every consumer_signalled starts at 0: every consumer is waiting.

Stage k > 0 forever: wait on queue k-1, dequeue what is there, enqueue it on queue k, signal
stage k+1. Stage 0: WARMUP untimed round trips, ``READY``, 0.3 s idle, ROUNDS timed round
trips (one descriptor in flight: io_or_offset = round number, len 64, oid 0, timed from
before the enqueue on queue 0 to after its dequeue from queue N-1), then one line
``RESULT {"impl": "bare", "n", "rounds", "rtt_ns": [...], "pids": [stage order]}``, then it
blocks until SIGTERM, kills the stages it forked and exits 0. Stages it forked also die
with it (PR_SET_PDEATHSIG).

``--trace`` adds ``"trace": {"k": [[woke, dequeued, enqueued, notified, waiting], ...]}``
(monotonic ns, one row per timed hop; ``waiting`` is just before the next blocking read);
stage 0's rows have a sixth column, ``sent``, and within a round run sent, enqueued,
notified, waiting, woke, dequeued. After the timed rounds stage 0 sends one more descriptor
round: each stage, on taking it, writes its rows to stage 0 over its own pipe.
"""
from __future__ import annotations

import _common  # noqa: F401  first: bench/signal.py and bench/queue.py would shadow the stdlib

import ctypes
import json
import mmap
import os
import signal
import struct
import sys
import time
import traceback
from typing import NoReturn

from sddf import atomic

CAPACITY = 512
HEADER = 8
DESC = struct.Struct("<QHB5x")
QUEUE_BYTES = HEADER + CAPACITY * DESC.size
PR_SET_PDEATHSIG = 1

Desc = tuple[int, int, int]

load16 = atomic.load_acquire_u16
store16 = atomic.store_release_u16
load32 = atomic.load_acquire_u32
store32 = atomic.store_release_u32
fence = atomic.fence
now = time.monotonic_ns


class Queue:
    """One queue: its header and descriptors at ``base`` in the shared mapping."""

    __slots__ = ("mem", "ptr", "tail", "head", "flag", "slots")

    def __init__(self, mem: mmap.mmap, ptr: atomic.Pointer, base: int) -> None:
        self.mem, self.ptr = mem, ptr
        self.tail, self.head, self.flag, self.slots = base, base + 2, base + 4, base + HEADER

    def empty(self) -> bool:
        return load16(self.ptr, self.tail) == load16(self.ptr, self.head)

    def dequeue(self) -> list[Desc]:
        """Consumer: take every descriptor there is."""
        ptr = self.ptr
        head = load16(ptr, self.head)
        tail = load16(ptr, self.tail)
        descs: list[Desc] = []
        while head != tail:
            descs.append(DESC.unpack_from(self.mem, self.slots + head % CAPACITY * DESC.size))
            head = (head + 1) & 0xFFFF
        store16(ptr, self.head, head)
        return descs

    def enqueue(self, descs: list[Desc]) -> None:
        """Producer: put ``descs`` on the queue and publish them."""
        ptr = self.ptr
        tail = load16(ptr, self.tail)
        if ((tail - load16(ptr, self.head)) & 0xFFFF) + len(descs) > CAPACITY:
            raise OverflowError("queue full")
        for desc in descs:
            DESC.pack_into(self.mem, self.slots + tail % CAPACITY * DESC.size, *desc)
            tail = (tail + 1) & 0xFFFF
        store16(ptr, self.tail, tail)

    def notify(self, eventfd: int) -> None:
        """Producer, after publishing: wake the consumer if it asked to be woken."""
        fence()
        if load32(self.ptr, self.flag) == 0:
            store32(self.ptr, self.flag, 1)
            os.eventfd_write(eventfd, 1)

    def rearm(self) -> bool:
        """Consumer, queue drained: request a signal; False (cancelled) if work came meanwhile."""
        store32(self.ptr, self.flag, 0)
        fence()
        if self.empty():
            return True
        store32(self.ptr, self.flag, 1)
        return False

    def receive(self, eventfd: int) -> list[Desc]:
        """Consumer, queue drained: sleep on ``eventfd`` unless work came, then take it all."""
        while True:
            if self.rearm():
                os.eventfd_read(eventfd)
            descs = self.dequeue()
            if descs:  # else a wakeup left over from a cancelled request
                return descs

    def receive_traced(self, eventfd: int) -> tuple[int, int, list[Desc]]:
        """:meth:`receive`, also returning when it went to sleep and when it woke."""
        waiting = woke = now()
        while True:
            if self.rearm():
                waiting = now()
                os.eventfd_read(eventfd)
                woke = now()
            descs = self.dequeue()
            if descs:
                return waiting, woke, descs


def forward(q_in: Queue, q_out: Queue, eventfd: int, next_eventfd: int) -> NoReturn:
    """Stage k > 0."""
    while True:
        q_out.enqueue(q_in.receive(eventfd))
        q_out.notify(next_eventfd)


def forward_traced(q_in: Queue, q_out: Queue, eventfd: int, next_eventfd: int,
                   warmup: int, rounds: int, report: int) -> NoReturn:
    """:func:`forward`, timing each hop; sends the timed hops' rows to ``report`` once a hop
    past the last timed one arrives (the last row's ``waiting`` is only known then)."""
    rows: list[list[int]] = []
    hop: list[int] | None = None
    while True:
        waiting, woke, descs = q_in.receive_traced(eventfd)
        dequeued = now()
        q_out.enqueue(descs)
        enqueued = now()
        q_out.notify(next_eventfd)
        notified = now()
        if hop is not None:
            rows.append(hop + [waiting])
            if len(rows) == warmup + rounds:
                with os.fdopen(report, "w") as out:
                    out.write(json.dumps(rows[warmup:]) + "\n")
        hop = [woke, dequeued, enqueued, notified]


def round_trip(q_out: Queue, q_in: Queue, eventfd: int, next_eventfd: int, number: int) -> None:
    """Stage 0: send descriptor ``number`` round the ring and take it back."""
    q_out.enqueue([(number, 64, 0)])
    q_out.notify(next_eventfd)
    check(q_in.receive(eventfd), number)


def round_trip_traced(q_out: Queue, q_in: Queue, eventfd: int, next_eventfd: int,
                      number: int) -> list[int]:
    """:func:`round_trip`, returning its row [woke, dequeued, enqueued, notified, waiting, sent]."""
    sent = now()
    q_out.enqueue([(number, 64, 0)])
    enqueued = now()
    q_out.notify(next_eventfd)
    notified = now()
    waiting, woke, descs = q_in.receive_traced(eventfd)
    dequeued = now()
    check(descs, number)
    return [woke, dequeued, enqueued, notified, waiting, sent]


def check(descs: list[Desc], number: int) -> None:
    if len(descs) != 1 or descs[0][0] != number:
        raise SystemExit(f"hops_bare: sent descriptor {number}, got back {descs}")


def lead(queues: list[Queue], eventfds: list[int], warmup: int, rounds: int,
         reports: list[int] | None) -> tuple[list[int], dict[str, list[list[int]]] | None]:
    """Stage 0's rounds: the samples (ns) and, with ``reports`` (stage k's pipe at k-1), the trace."""
    ring = (queues[0], queues[-1], eventfds[0], eventfds[1])
    for number in range(warmup):
        round_trip(*ring, number)
    print("READY", flush=True)
    time.sleep(0.3)
    samples: list[int] = []
    if reports is None:
        for number in range(rounds):
            t0 = now()
            round_trip(*ring, number)
            samples.append(now() - t0)
        return samples, None
    rows: list[list[int]] = []
    for number in range(rounds):
        row = round_trip_traced(*ring, number)
        samples.append(row[1] - row[5])
        rows.append(row)
    trace = {"0": rows}
    queues[0].enqueue([(rounds, 64, 0)])  # the round that makes the stages report
    queues[0].notify(eventfds[1])
    for k, report in enumerate(reports, 1):
        with os.fdopen(report) as source:
            trace[str(k)] = json.loads(source.readline())
    check(queues[-1].receive(eventfds[0]), rounds)
    return samples, trace


def pin(k: int) -> None:
    """Pin stage ``k`` to the k-th (round robin) of the CPUs listed in $HOPS_CPUS ("0,1"), if set."""
    cpus = [int(c) for c in os.environ.get("HOPS_CPUS", "").split(",") if c]
    if cpus:
        os.sched_setaffinity(0, {cpus[k % len(cpus)]})


def stage(k: int, queues: list[Queue], eventfds: list[int], warmup: int, rounds: int,
          reports: list[int] | None, parent: int) -> NoReturn:
    """A forked stage: dies with stage 0, then forwards for ever."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        pin(k)
        ends = (queues[k - 1], queues[k], eventfds[k], eventfds[(k + 1) % len(queues)])
        if reports is None:
            forward(*ends)
        forward_traced(*ends, warmup, rounds, reports[k - 1])
    except Exception:
        traceback.print_exc()
    finally:
        os._exit(1)


def main(argv: list[str]) -> int:
    trace = "--trace" in argv
    args = [arg for arg in argv if arg != "--trace"]
    if len(args) != 3 or not 2 <= int(args[0]) <= 8:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    n, rounds, warmup = map(int, args)
    mem = mmap.mmap(-1, n * QUEUE_BYTES, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    ptr = atomic.pointer(mem)
    queues = [Queue(mem, ptr, i * QUEUE_BYTES) for i in range(n)]
    eventfds = [os.eventfd(0) for _ in range(n)]
    pipes = [os.pipe() for _ in range(1, n)] if trace else []
    readers = [r for r, _ in pipes] if trace else None
    writers = [w for _, w in pipes] if trace else None
    parent = os.getpid()
    pids = [parent]
    sys.stdout.flush()
    try:
        for k in range(1, n):
            pid = os.fork()
            if pid == 0:
                stage(k, queues, eventfds, warmup, rounds, writers, parent)
            pids.append(pid)
        pin(0)
        samples, stage_rows = lead(queues, eventfds, warmup, rounds, readers)
        result: dict[str, object] = {"impl": "bare", "n": n, "rounds": rounds, "rtt_ns": samples, "pids": pids}
        if stage_rows is not None:
            result["trace"] = stage_rows
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        print("RESULT " + json.dumps(result), flush=True)
        signal.sigwait({signal.SIGTERM})
        return 0
    finally:
        for pid in pids[1:]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
