"""The framework side of bench/hops.py: a ring of N PDs passing one net descriptor along.

Each :class:`HopStage` takes what arrives on its incoming net queue and puts it on its outgoing one,
with sDDF's signalling protocol on both (the producer notifies only when the consumer asked; the
consumer asks, fences and re-checks before it sleeps), its queue ends tracked by its ledger as a
virtualiser's are. Stage 0 (``origin``) times ``rounds`` trips around the ring after ``warmup``
untimed ones: it writes ``READY`` once warm, waits 0.3 s (the system idle, for the benchmark's CPU
accounting), then ``RESULT {json}`` — the protocol of bench/hops_bare.py and bench/c/hops.c.
:class:`TracedHopStage` also stamps each step of each hop and, after its last, writes them as
``TRACE {json}`` (a PD may not open files once running).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bench.components import say
from sddf.component import Component
from sddf.net.queue import NetConsumer, NetProducer

IDLE_BEFORE_S = 0.3
DESC_LEN = 64


@dataclass
class HopConfig:
    """One stage: its incoming and outgoing queues (map names), their channels and capacity."""

    inq: str
    outq: str
    in_channel: int
    out_channel: int
    capacity: int
    n: int
    rounds: int
    warmup: int
    origin: bool = False


class HopStage(Component):
    kind = "bench.hop"
    Config = HopConfig

    def init(self) -> None:
        cfg: HopConfig = self.config
        self.inq = NetConsumer(f"{self.name}:in", self.regions[cfg.inq], cfg.capacity, on_refuse=self.refuse)
        self.outq = NetProducer(f"{self.name}:out", self.regions[cfg.outq], cfg.capacity, on_refuse=self.refuse)
        self.ledger.track(self.inq, self.outq)
        self.inq.request_and_recheck()  # asleep until the first descriptor
        if cfg.origin:
            self.sent_ns = 0
            self.samples: list[int] = []
            self.left = cfg.warmup + cfg.rounds
            self.send()

    def notified(self, ch: int) -> None:
        inq, arrived = self.inq, self.came_back if self.config.origin else self.forward
        while True:
            flat = inq.dequeue_flat()
            if flat:
                arrived(flat)
            if not inq.request_and_recheck():
                return  # asked to be signalled, and nothing came meanwhile: sleep

    def forward(self, flat: tuple) -> None:
        """Pass descriptors on (flat: the queue ends move them fastest so) and signal as sDDF does."""
        self.outq.enqueue_flat(flat)
        if self.outq.signal_needed():
            self.notify(self.config.out_channel)

    def send(self) -> None:
        self.sent_ns = time.monotonic_ns()
        self.forward((self.left, DESC_LEN, 0))

    def came_back(self, flat: tuple) -> None:
        now = time.monotonic_ns()
        if flat[0] != self.left or len(flat) != 3:
            raise RuntimeError(f"the ring returned {flat}, not descriptor {self.left}")
        self.samples.append(now - self.sent_ns)
        self.left -= 1
        if self.left == self.config.rounds:
            say("READY")
            time.sleep(IDLE_BEFORE_S)
            self.samples.clear()
        if self.left:
            self.send()
        else:
            self.report()

    def report(self) -> None:
        say("RESULT " + json.dumps(self.result()))

    def result(self) -> dict[str, Any]:
        return {"impl": "framework", "n": self.config.n, "rounds": self.config.rounds, "rtt_ns": self.samples}


#: what each traced hop records, in order (monotonic ns)
TRACE_POINTS = ("waiting", "woke", "handler", "dequeued", "enqueued", "notified", "returned")


class TracedHopStage(HopStage):
    """A stage that stamps every step of every hop: when it went to sleep, when epoll returned,
    when ``notified`` began, after the dequeue, the enqueue and the notify, and when ``notified``
    returned. A forwarding stage writes the timed hops' stamps before it passes the last
    descriptor on (that hop is not among them)."""

    def init(self) -> None:
        self.stamps: list[list[int]] = []
        self.current = [0] * len(TRACE_POINTS)
        clock, wait = time.monotonic_ns, self._waiter.wait

        def timed_wait(timeout: float | None = None) -> list[int]:
            self.current[0] = clock()
            ready = wait(timeout)
            self.current[1] = clock()
            return ready
        self._waiter.wait = timed_wait  # type: ignore[method-assign]
        super().init()

    def notified(self, ch: int) -> None:
        self.current[2], self.current[3] = time.monotonic_ns(), 0
        super().notified(ch)
        if not self.current[3]:
            return  # nothing came: not a hop
        self.current[6] = time.monotonic_ns()
        self.stamps.append(list(self.current))

    def forward(self, flat: tuple) -> None:
        clock, current, cfg = time.monotonic_ns, self.current, self.config
        current[3] = clock()
        if not cfg.origin and len(self.stamps) + 1 == cfg.warmup + cfg.rounds:
            # before passing the last one on: the stages write one after another (a long line
            # written while another stage writes would be split)
            say("TRACE " + json.dumps({"stage": self.name, "points": TRACE_POINTS,
                                       "stamps": self.stamps[cfg.warmup:]}))
        self.outq.enqueue_flat(flat)
        current[4] = clock()
        if self.outq.signal_needed():
            self.notify(self.config.out_channel)
        current[5] = clock()

    def came_back(self, flat: tuple) -> None:
        self.current[3] = time.monotonic_ns()
        super().came_back(flat)
