"""The processes the signal benchmark runs: round-trip components, their systems, the raw eventfd baseline.

PD processes import the components as ``bench.components:…``, so the monitor (and through it
every PD) needs the repository root on ``PYTHONPATH``. ``python -m bench.components`` runs
a round-trip system under the Monitor, or the raw eventfd baseline (see :func:`main`).

A pinger PD writes its samples as one line ``RESULT_PREFIX {json}`` on stdout, which the
PD inherits from the monitor; the benchmark reads the monitor's stdout to collect them.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from dataclasses import dataclass
from typing import Callable

from sddf.component import Component
from sddf.monitor import Monitor
from sddf.runtime import nice_for
from sddf.system import Channel, ProtectionDomain, SystemDescription

RESULT_PREFIX = "SIGNAL-BENCH-RESULT "
PINGER_PRIORITY = 100
ECHO_PRIORITY = 101  # strictly higher than the pinger's, so the pinger may ppcall it


@dataclass
class RoundTripConfig:
    """A pinger: the channel to its echo peer, rounds to time, and untimed warm-up rounds first."""

    peer: int
    rounds: int
    warmup: int = 0


def say(line: str) -> None:
    """Write ``line`` on stdout for the benchmark to collect.

    Written with os.write, not print (which under PYTHONUNBUFFERED writes the text and the
    newline separately), so PDs sharing the pipe cannot split each other's lines as long as
    a line fits in PIPE_BUF (4096 bytes; longer lines must come from one PD at a time).
    """
    data = memoryview((line + "\n").encode())
    while data:
        data = data[os.write(sys.stdout.fileno(), data):]


def report(pd: str, samples_ns: list[int]) -> None:
    """Write one PD's round-trip times as one line (a few hundred samples fit in PIPE_BUF)."""
    say(RESULT_PREFIX + json.dumps({"pd": pd, "rtt_ns": samples_ns}))


class Echo(Component):
    """Answers every notification with a notification and every PPC with its own message."""

    kind = "signal-bench"

    def notified(self, ch: int) -> None:
        self.notify(ch)

    def protected(self, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        return label, mrs


class NotifyPinger(Component):
    """Notifies its peer and times each notification that comes back (entry to entry of ``notified``)."""

    kind = "signal-bench"
    Config = RoundTripConfig

    def init(self) -> None:
        self.samples: list[int] = []
        self.left = self.config.warmup + self.config.rounds
        self.last = time.perf_counter_ns()
        self.notify(self.config.peer)

    def notified(self, ch: int) -> None:
        now = time.perf_counter_ns()
        self.samples.append(now - self.last)
        self.last = now
        self.left -= 1
        if self.left > 0:
            self.notify(ch)
        else:
            report(self.name, self.samples[self.config.warmup:])


class PpcPinger(Component):
    """Times ``rounds`` protected procedure calls into its peer, all from ``init``."""

    kind = "signal-bench"
    Config = RoundTripConfig

    def init(self) -> None:
        clock, call, peer = time.perf_counter_ns, self.ppcall, self.config.peer
        samples = []
        for i in range(self.config.warmup + self.config.rounds):
            start = clock()
            call(peer, 1, (i,))
            samples.append(clock() - start)
        report(self.name, samples[self.config.warmup:])


PINGERS = {"notify": "bench.components:NotifyPinger", "ppc": "bench.components:PpcPinger"}


def round_trip_system(kind: str, rounds: int, warmup: int, pairs: int = 1,
                      cpus: tuple[int, int] | None = None) -> SystemDescription:
    """``pairs`` pinger/echo pairs; ``kind`` is "notify" or "ppc" (the pinger may call its echo).

    ``cpus``: the cores every pinger and every echo are pinned to (None: the scheduler places them).
    """
    sdf = SystemDescription(f"signal-bench-{kind}-{os.getpid()}")
    pinger_cpu, echo_cpu = cpus or (None, None)
    for i in range(pairs):
        pinger = sdf.add_pd(ProtectionDomain(f"pinger{i}", PINGERS[kind], priority=PINGER_PRIORITY,
                                             cpu=pinger_cpu))
        echo = sdf.add_pd(ProtectionDomain(f"echo{i}", "bench.components:Echo", priority=ECHO_PRIORITY,
                                           cpu=echo_cpu))
        ch = sdf.add_channel(Channel(pinger, echo, pp_a=kind == "ppc"))
        pinger.config.update(peer=ch.pd_a_id, rounds=rounds, warmup=warmup)
    return sdf


def eventfd_round_trips(rounds: int, warmup: int, cpus: tuple[int, int] | None = None,
                        epoll: bool = False) -> None:
    """The baseline: two plain processes bounce a count over two eventfds with blocking reads
    (``epoll``: each waits in an edge-triggered epoll instead, as a PD's loop does).

    This process times each write-then-read round trip and reports them; a forked child echoes.
    Each side gets the core and nice value its PD counterpart (pinger, echo) would get.
    """
    ping, pong = os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)
    write = os.eventfd_write

    def reader(fd: int) -> Callable[[int], object]:
        if not epoll:
            return os.eventfd_read
        waiter = select.epoll()
        waiter.register(fd, select.EPOLLIN | select.EPOLLET)
        return lambda _fd: waiter.poll()

    total = warmup + rounds
    child = os.fork()
    if child == 0:
        try:
            _become(ECHO_PRIORITY, None if cpus is None else cpus[1])
            read = reader(ping)
            for _ in range(total):
                read(ping)
                write(pong, 1)
        finally:
            os._exit(0)
    _become(PINGER_PRIORITY, None if cpus is None else cpus[0])
    read = reader(pong)
    clock = time.perf_counter_ns
    samples = []
    for _ in range(total):
        start = clock()
        write(ping, 1)
        read(pong)
        samples.append(clock() - start)
    os.waitpid(child, 0)
    report("eventfd-epoll" if epoll else "eventfd", samples[warmup:])


def _become(priority: int, cpu: int | None) -> None:
    """Take the nice value and core a PD of ``priority`` pinned to ``cpu`` runs with (see sddf.runtime)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice_for(priority))
    except PermissionError:
        pass  # as in sddf.runtime: below nice 0 needs CAP_SYS_NICE
    if cpu is not None:
        os.sched_setaffinity(0, {cpu % os.cpu_count()})


def _cpus(text: str) -> tuple[int, int] | None:
    if text == "none":
        return None
    a, b = text.split(",")
    return int(a), int(b)


def main(argv: list[str]) -> int:
    """``python -m bench.components notify|ppc|eventfd|eventfd-epoll --rounds N [--warmup W] [--pairs P]
    [--cpus A,B|none]``.

    notify/ppc run the round-trip system under the Monitor until it is stopped (SIGTERM);
    eventfd and eventfd-epoll run a baseline and exit. Each pinger prints its samples (see :func:`report`).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.components")
    parser.add_argument("kind", choices=[*PINGERS, "eventfd", "eventfd-epoll"])
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=1, help="pinger/echo pairs (notify/ppc only)")
    parser.add_argument("--cpus", type=_cpus, default=None, metavar="A,B|none",
                        help="pin the pinger side to core A and the echo side to core B")
    args = parser.parse_args(argv)
    if args.kind.startswith("eventfd"):
        eventfd_round_trips(args.rounds, args.warmup, args.cpus, epoll=args.kind == "eventfd-epoll")
        return 0
    return Monitor(round_trip_system(args.kind, args.rounds, args.warmup, args.pairs, args.cpus)).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
