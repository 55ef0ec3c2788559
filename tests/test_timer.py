"""The timerfd timer driver: its logic in-process (no monitor), and the bundled timer system run whole."""
from __future__ import annotations

import ctypes
import os
import random
import re
import select
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from helpers.sddf_cli import sddf
from sddf.apps.systems import timer as timer_system
from sddf.config import PdConfig
from sddf.devices import open_device
from sddf.ledger import ledger_size
from sddf.shm import Region
from sddf.drivers.timer import timerfd
from sddf.timer.client import GET_TIME, REPLY_ERROR, REPLY_OK, SET_TIMEOUT

IRQ = 0
CLIENTS = [1, 2, 3, 4]
STRANGER = 9  # a channel that is not a client's
FIRE_TIMEOUT_S = 10  # a generous bound on waiting for a due timeout's irq (never a timing assertion)
MS = 1_000_000


class RecordingClock:
    """Stands in for the driver's ``time`` module: the real monotonic clock, remembering its last reading."""

    def __init__(self) -> None:
        self.last = 0

    def monotonic_ns(self) -> int:
        self.last = time.monotonic_ns()
        return self.last


@dataclass
class Harness:
    """A TimerDriver on a real timerfd, its notifies and irq acks recorded instead of sent."""

    driver: timerfd.TimerDriver
    fd: int
    clock: RecordingClock
    notifies: list[tuple[int, int]] = field(default_factory=list)  # (client channel, monotonic ns)
    acks: list[int] = field(default_factory=list)
    irqs: int = 0

    def set_timeout(self, ch: int, ns: int) -> int:
        """SET_TIMEOUT for client ``ch``; returns the exact deadline the driver computed."""
        assert self.driver.protected(ch, SET_TIMEOUT, [ns]) == (REPLY_OK, [])
        return self.clock.last + ns

    def fire_once(self) -> None:
        """Block until the timerfd fires, then deliver the irq as the event loop would."""
        ready, _, _ = select.select([self.fd], [], [], FIRE_TIMEOUT_S)
        assert ready, f"the timerfd did not fire; {len(self.notifies)} notifies so far"
        self.deliver_irq()

    def deliver_irq(self) -> None:
        self.irqs += 1
        self.driver.notified(IRQ)

    def run_until(self, count: int) -> None:
        while len(self.notifies) < count:
            self.fire_once()


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    fd = open_device("timerfd")
    try:
        pd = PdConfig("timer_driver", "sddf.drivers.timer.timerfd:TimerDriver", 150, None, -1,
                      irqs={IRQ: fd}, app={"irq": IRQ, "clients": CLIENTS}, ledger_words=len(CLIENTS))
        clock = RecordingClock()
        monkeypatch.setattr(timerfd, "time", clock)
        h = Harness(timerfd.TimerDriver(pd), fd, clock)
        ack = h.driver.irq_ack

        def recording_ack(ch: int) -> None:
            h.acks.append(ch)
            ack(ch)

        monkeypatch.setattr(h.driver, "notify", lambda ch: h.notifies.append((ch, time.monotonic_ns())))
        monkeypatch.setattr(h.driver, "irq_ack", recording_ack)
        h.driver.init()
        yield h
    finally:
        os.close(fd)


@pytest.mark.timeout(30)
def test_a_restarted_driver_still_wakes_the_clients_that_were_waiting() -> None:
    """The timer driver dies (kill -9: nothing it held privately survives) with two clients
    waiting; its replacement, on the same ledger, notifies both when their timeouts pass."""
    fd, ledger = open_device("timerfd"), Region.create("ledger", ledger_size(len(CLIENTS)))
    try:
        pd = PdConfig("timer_driver", "sddf.drivers.timer.timerfd:TimerDriver", 150, None, -1, irqs={IRQ: fd},
                      app={"irq": IRQ, "clients": CLIENTS}, ledger_fd=ledger.fd, ledger_words=len(CLIENTS))
        first = timerfd.TimerDriver(pd)
        first.start()
        for ch in CLIENTS[:2]:
            assert first.answer_call(ch, SET_TIMEOUT, [20 * MS]) == (REPLY_OK, [])
        del first
        second = timerfd.TimerDriver(pd)
        woken: list[int] = []
        second.notify = woken.append  # type: ignore[method-assign]
        second.start()
        while len(woken) < 2:
            assert select.select([fd], [], [], FIRE_TIMEOUT_S)[0], f"only {woken} were woken"
            second.notified(IRQ)
        assert sorted(woken) == CLIENTS[:2]
    finally:
        os.close(fd)
        ledger.close()


def armed_deadline(fd: int) -> int:
    """Nanoseconds until the timerfd fires (0: disarmed)."""
    spec = timerfd._Itimerspec()
    assert timerfd._libc.timerfd_gettime(fd, ctypes.byref(spec)) == 0
    return spec.it_value.tv_sec * 10**9 + spec.it_value.tv_nsec


@pytest.mark.timeout(30)
def test_each_client_has_one_timeout_the_latest_set_notified_in_order_none_early(harness: Harness) -> None:
    """sDDF keeps one pending timeout per client: a SET_TIMEOUT replaces the client's previous one."""
    rng = random.Random(4)
    for _round in range(6):
        latest: dict[int, int] = {}  # client -> the deadline it set last
        for _ in range(rng.randrange(1, 30)):
            client = rng.choice(CLIENTS)
            timeout = 0 if rng.random() < 0.1 else rng.randrange(60 * MS)
            latest[client] = harness.set_timeout(client, timeout)
        first = len(harness.notifies)
        harness.run_until(first + len(latest))
        got = harness.notifies[first:]
        assert sorted(ch for ch, _ in got) == sorted(latest), "each client is notified once, for its latest timeout"
        assert [ch for ch, _ in got] == sorted(latest, key=latest.__getitem__), "in deadline order"
        early = [(ch, latest[ch] - at) for ch, at in got if at < latest[ch]]
        assert not early, f"notified before the deadline: {early}"
        assert armed_deadline(harness.fd) == 0, "nothing may stay pending once every latest timeout passed"
    before = time.monotonic_ns()
    label, mrs = harness.driver.protected(CLIENTS[0], GET_TIME, [])
    assert label == REPLY_OK and before <= mrs[0] <= time.monotonic_ns()
    assert harness.acks == [IRQ] * harness.irqs, "every irq must be acked"


@pytest.mark.timeout(10)
def test_a_new_timeout_replaces_the_clients_old_one(harness: Harness) -> None:
    """A client that sets an hour and then 5 ms is notified once, and the hour is gone: a client
    cannot grow the driver's state by setting many timeouts."""
    for _ in range(1000):
        harness.set_timeout(CLIENTS[0], 3600 * 10**9)
    harness.set_timeout(CLIENTS[0], 5 * MS)
    harness.run_until(1)
    assert [ch for ch, _ in harness.notifies] == [CLIENTS[0]]
    assert armed_deadline(harness.fd) == 0, "the replaced hour-long timeouts must not stay armed"


@pytest.mark.timeout(10)
def test_an_irq_with_nothing_due_notifies_nobody(harness: Harness) -> None:
    harness.set_timeout(CLIENTS[0], 3600 * 10**9)
    harness.deliver_irq()
    assert harness.notifies == []
    assert harness.acks == [IRQ]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("ch", "label", "mrs"), [
    (CLIENTS[0], 99, [MS]),
    (CLIENTS[0], SET_TIMEOUT, [-1]),
    (CLIENTS[0], SET_TIMEOUT, []),
    (CLIENTS[0], SET_TIMEOUT, [MS, MS]),
    (CLIENTS[0], SET_TIMEOUT, [timerfd.MAX_TIMEOUT_NS + 1]),
    (STRANGER, SET_TIMEOUT, [MS]),
    (STRANGER, GET_TIME, []),
], ids=["unknown label", "negative", "missing mr0", "two mrs", "too long", "stranger sets", "stranger asks"])
def test_bad_requests_are_refused_and_schedule_nothing(harness: Harness, ch: int, label: int,
                                                       mrs: list[int]) -> None:
    assert harness.driver.protected(ch, label, mrs) == (REPLY_ERROR, [])
    harness.set_timeout(CLIENTS[1], 2 * MS)  # the only timeout: a refused request must add none
    harness.run_until(1)
    harness.deliver_irq()  # anything a refused request scheduled would be due by now
    assert [c for c, _ in harness.notifies] == [CLIENTS[1]]


ROUND = re.compile(r"^(client\d+): round (\d+) complete: (\d+) timeouts, none early", re.MULTILINE)


@pytest.mark.timeout(40)
def test_timer_system_runs_rounds_without_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDDF_RUN_DIR", str(tmp_path))
    run = sddf("run", "timer", "--duration", "3")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "faulted" not in output
    rounds: dict[str, list[int]] = defaultdict(list)
    timeouts = {pd.name: len(pd.config["timeouts_ns"]) for pd in timer_system.system().pds
                if "timeouts_ns" in pd.config}
    for client, number, count in ROUND.findall(output):
        rounds[client].append(int(number))
        assert int(count) == timeouts[client]
    assert set(rounds) == set(timeouts), output
    for client, numbers in rounds.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{client} skipped or repeated a round: {numbers}"


def test_component_log_is_one_write_per_line(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """PDs share the console: a line must reach it in one write(), or lines from two PDs interleave
    (print() makes two writes when Python runs unbuffered, as CI does with PYTHONUNBUFFERED=1)."""
    writes: list[tuple[int, bytes]] = []
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append((fd, bytes(data))) or len(data))
    harness.driver.log("round 3 complete")
    assert writes == [(1, b"timer_driver: round 3 complete\n")]
