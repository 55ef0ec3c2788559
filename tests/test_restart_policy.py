"""The monitor's restart policy as a supervisor keeps it (pure logic: no processes)."""
from __future__ import annotations

from sddf.monitor import HEALTHY_S, MAX_BACKOFF_S, RESTART_BACKOFF_S, Restarts


def faults(policy: Restarts, times: list[float], uptime: float = 0.0) -> list[float | None]:
    """The delays granted for faults at ``times``, each PD instance having run ``uptime`` seconds."""
    return [policy.after_fault(t, t - uptime) for t in times]


def test_backoff_doubles_with_each_fault_in_a_row_up_to_a_cap() -> None:
    delays = faults(Restarts(limit=100, window_s=1e9), [float(i) for i in range(12)])
    assert delays[:4] == [0.0] + [RESTART_BACKOFF_S * 2 ** i for i in range(3)], "the first at once"
    assert max(delays) == MAX_BACKOFF_S == delays[-1], "the 12th fault must not wait 2**11 × the base"


def test_backoff_starts_afresh_after_a_healthy_run() -> None:
    policy = Restarts(limit=100, window_s=1e9)
    assert faults(policy, [0.0, 1.0, 2.0]) == [0.0, RESTART_BACKOFF_S, 2 * RESTART_BACKOFF_S]
    assert policy.after_fault(100.0, 100.0 - HEALTHY_S) == 0.0


def test_backoff_starts_afresh_after_an_operators_restart() -> None:
    policy = Restarts(limit=100, window_s=1e9)
    faults(policy, [0.0, 1.0, 2.0])
    policy.requested()
    assert faults(policy, [3.0, 4.0]) == [0.0, RESTART_BACKOFF_S]


def test_restarts_are_limited_within_the_window_not_over_the_whole_run() -> None:
    policy = Restarts(limit=3, window_s=60.0)
    assert None not in faults(policy, [0.0, 1.0, 2.0])
    assert policy.after_fault(3.0, 3.0) is None, "a fourth fault within 60 s gives up"
    policy = Restarts(limit=3, window_s=60.0)
    spread = faults(policy, [i * 30.0 for i in range(20)], uptime=HEALTHY_S)  # one every 30 s
    assert None not in spread and policy.total == 20


def test_no_restarts_allowed_means_none() -> None:
    assert Restarts(limit=0, window_s=60.0).after_fault(5.0, 0.0) is None
