"""sddf.testing.Bench itself: notifications delivered and recorded, stalls, kills and restarts,
in-process PPC with the callee's deferred notifies sent, and a system that never settles."""
from __future__ import annotations

import gc
import weakref
from typing import Iterator

import pytest

from sddf.system import Channel, ProtectionDomain, SystemDescription
from sddf.testing import Bench, BenchError, Notify

RELAY = "components.relay:Relay"


def chain(deferred: bool = False) -> SystemDescription:
    """a → b → c, and b calls the doubler (higher priority) first, which then tells c."""
    sdf = SystemDescription("chain")
    a, b, c = (sdf.add_pd(ProtectionDomain(name, RELAY, priority=100)) for name in "abc")
    doubler = sdf.add_pd(ProtectionDomain("doubler", "components.relay:Doubler", priority=150))
    ab, bc = sdf.add_channel(Channel(a, b)), sdf.add_channel(Channel(b, c))
    call = sdf.add_channel(Channel(b, doubler, pp_a=True))
    told = sdf.add_channel(Channel(doubler, c))
    a.config.update(outbound=ab.pd_a_id, deferred=deferred)
    b.config.update(outbound=bc.pd_a_id, server=call.pd_a_id, deferred=deferred)
    doubler.config.update(told=told.pd_a_id)
    return sdf


@pytest.fixture
def bench() -> Iterator[Bench]:
    with Bench(chain()) as bench:
        bench.start()
        yield bench


def kick(bench: Bench) -> None:
    """Start the chain: notify ``a`` (from ``b``, its peer on their channel)."""
    ab = next(ch for ch in bench.sdf.channels if (ch.pd_a.name, ch.pd_b.name) == ("a", "b"))
    bench.component("b").notify(ab.pd_b_id)


def test_notifications_are_delivered_until_quiet_and_recorded(bench: Bench) -> None:
    kick(bench)
    bench.run()
    # c hears from b, and from the doubler (its deferred notify, sent after the call)
    assert [bench.counters(pd)["seen"] for pd in "abc"] == [1, 1, 2]
    assert bench.component("b").seen == 2, "b's call ran the doubler in-process"
    assert Notify("a", bench.component("a").pd.app["outbound"], "b") in bench.notifies
    assert {n.sender for n in bench.notifies} == {"b", "a", "doubler"}, "the doubler's deferred notify was sent"


def test_a_stalled_pd_keeps_its_notification_pending_until_resumed(bench: Bench) -> None:
    bench.stall("b")
    kick(bench)
    bench.run()
    assert bench.counters("a")["seen"] == 1 and bench.counters("b")["seen"] == 0
    bench.resume("b")
    bench.run()
    assert bench.counters("c")["seen"] == 2


def test_a_restarted_pd_starts_afresh_and_still_gets_what_was_pending(bench: Bench) -> None:
    bench.stall("c")
    kick(bench)
    bench.run()
    old = bench.component("c")
    fresh = bench.restart("c")
    assert fresh is not old and bench.counters("c")["seen"] == 0
    bench.run()
    assert bench.counters("c")["seen"] == 2, "the pending notifications reach the new instance"


def test_deferred_notifies_go_out_when_the_handler_returns() -> None:
    with Bench(chain(deferred=True)) as bench:
        bench.start()
        kick(bench)
        bench.run()
        assert [bench.counters(pd)["seen"] for pd in "abc"] == [1, 1, 2]


def test_a_system_that_never_settles_is_reported() -> None:
    sdf = SystemDescription("loop")
    a, b = (sdf.add_pd(ProtectionDomain(name, RELAY, priority=100)) for name in "ab")
    ch = sdf.add_channel(Channel(a, b))
    a.config.update(outbound=ch.pd_a_id)
    b.config.update(outbound=ch.pd_b_id)
    with Bench(sdf) as bench:
        bench.start()
        bench.component("a").notify(ch.pd_a_id)
        with pytest.raises(BenchError, match="did not settle"):
            bench.run(max_steps=50)



def test_a_killed_component_is_freed_without_the_cycle_collector() -> None:
    """Its queue ends (and the memory they point into) go by reference counting alone: CPython
    3.11 can crash when its cycle collector frees a memoryview that a cffi pointer still exports."""
    from sddf.apps.systems import echo

    with Bench(echo.system()) as bench:
        bench.start()
        gc.disable()
        try:
            end = weakref.ref(bench.component("net_virt_rx").driver_active)
            bench.kill("net_virt_rx")
            assert end() is None, "the killed component's queue end waits for the cycle collector"
        finally:
            gc.enable()
