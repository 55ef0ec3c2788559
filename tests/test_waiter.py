"""The Waiter a PD sleeps in (one C call, ``pd_wait``): notifications claimed once, the heartbeat,
the counters' publish timer that never keeps an idle PD awake, and the bounded poll."""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator

import pytest

from sddf import atomic
from sddf.channel import ChannelEnd, Waiter, channel_pair, new_timerfd
from sddf.ledger import Ledger, ledger_size
from sddf.stats import HEARTBEAT_OFFSET, STATS_SIZE

CHANNEL = 7


@pytest.fixture
def pair() -> Iterator[tuple[ChannelEnd, ChannelEnd, Waiter]]:
    a, b = (ChannelEnd.attach(fds) for fds in channel_pair())
    waiter = Waiter()
    waiter.add_notification(CHANNEL, b.notification)
    yield a, b, waiter
    waiter.close()
    a.close()
    b.close()


def thread_cpu_s() -> float:
    return time.thread_time()


def test_a_notification_is_reported_once_and_coalesces(pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    a, _b, waiter = pair
    assert waiter.wait(0) == []
    a.notify()
    a.notify()  # pending already: one wake-up, as seL4's notifications
    assert waiter.wait(0) == [CHANNEL]
    assert waiter.wait(0) == []
    a.notify()  # the wait claimed the word: the next notify wakes it again
    assert waiter.wait(0) == [CHANNEL]


def test_the_heartbeat_is_even_while_waiting_and_odd_after(pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    a, _b, waiter = pair
    page = bytearray(STATS_SIZE)
    waiter.beat_on(page, HEARTBEAT_OFFSET)
    beat = lambda: atomic.load_acquire_u64(atomic.pointer(page), HEARTBEAT_OFFSET)  # noqa: E731
    waiter.enter()
    assert beat() % 2 == 1  # in init
    seen = []
    threading.Timer(0.05, lambda: (seen.append(beat()), a.notify())).start()
    assert waiter.wait(2) == [CHANNEL]
    assert seen and seen[0] % 2 == 0  # asleep in the wait
    assert beat() % 2 == 1 and beat() > seen[0]  # handling what woke it


def test_the_publish_timer_fires_once_after_a_wake_and_not_while_idle(
        pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    a, _b, waiter = pair
    published = []
    waiter.publish_with(new_timerfd(), 0.02, lambda: published.append(time.monotonic()))
    assert waiter.wait(0.1) == [] and published == []  # nothing happened: nothing to publish
    a.notify()
    assert waiter.wait(0) == [CHANNEL]
    assert waiter.wait(0.2) == [] and len(published) == 1  # once, a period after the wake
    assert waiter.wait(0.2) == [] and len(published) == 1  # and never again while idle


def test_a_bounded_poll_spins_and_takes_a_notification_without_sleeping(
        pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    a, _b, waiter = pair
    waiter.poll_for(1_000_000)
    threading.Timer(0.1, a.notify).start()
    before = thread_cpu_s()
    assert waiter.wait(5) == [CHANNEL]
    assert thread_cpu_s() - before > 0.03, "it slept instead of spinning"


def test_a_bounded_poll_sees_other_fds_too(pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    _a, _b, waiter = pair
    waiter.poll_for(1_000_000)  # 1 s of spinning at most
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    called = []
    waiter.add_callback(fd, lambda: (called.append(os.eventfd_read(fd))))
    threading.Timer(0.05, os.eventfd_write, (fd, 1)).start()
    start = time.monotonic()
    while not called and time.monotonic() - start < 5:
        waiter.wait(5)
    assert called and time.monotonic() - start < 0.5, "the poll did not look at the callback's fd"
    os.close(fd)


def test_without_a_poll_a_wait_sleeps(pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    a, _b, waiter = pair
    threading.Timer(0.1, a.notify).start()
    before = thread_cpu_s()
    assert waiter.wait(5) == [CHANNEL]
    assert thread_cpu_s() - before < 0.02


def test_a_pds_poll_reaches_its_waiter_and_the_monitors_overrides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from components import importable
    from sddf.monitor import Monitor
    from sddf.system import ProtectionDomain, SystemDescription
    from sddf.testing import Bench

    importable(monkeypatch)
    sdf = SystemDescription("polled")
    sdf.add_pd(ProtectionDomain("idle", "components.idle:Idle", poll_us=123))
    with Bench(sdf) as bench:
        bench.start()
        assert bench.component("idle")._waiter._c.poll_ns == 123_000
    for override, handed in ((None, 123), (5, 5)):
        monitor = Monitor(sdf, log=lambda _msg: None, poll_us=override)
        try:
            monitor.build()
            assert monitor.pds["idle"].config.poll_us == handed
        finally:
            monitor.close()
    with pytest.raises(ValueError, match="poll_us"):
        Monitor(sdf, poll_us=-1)


def test_a_wake_whose_handler_neither_commits_nor_notifies_is_counted_unproductive(
        pair: tuple[ChannelEnd, ChannelEnd, Waiter]) -> None:
    """The wait judges each wake by the PD's progress count, which a ledger commit that publishes
    bumps (in C) as a notify does (in Component.notify)."""
    a, _b, waiter = pair
    progress = atomic.ffi.new("uint64_t[1]")
    waiter.count_progress(progress)
    ledger = Ledger("pd", bytearray(ledger_size(1)), 1, {})
    ledger.count_progress(progress)
    a.notify()
    assert waiter.wait(0) == [CHANNEL]
    ledger.set(0, 5)
    ledger.commit()  # published a word: found work
    a.notify()
    assert waiter.wait(0) == [CHANNEL]
    ledger.commit()  # nothing staged: publishes nothing
    waiter.settle()
    assert waiter.wake_counts() == (2, 1, {CHANNEL: 1})
    assert waiter.wait(0) == []  # no wake: nothing more to judge
    assert waiter.wake_counts() == (2, 1, {CHANNEL: 1})
