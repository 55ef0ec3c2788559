"""Protected procedure calls: answered in order, and a callee that dies mid-call fails the caller
(reported by name, promptly) instead of leaving it blocked forever."""
from __future__ import annotations

from monitor_fixtures import Start, run_dir, systems  # noqa: F401 - fixtures

SYSTEM = """
    from sddf.system import ProtectionDomain
    caller = sdf.add_pd(ProtectionDomain("caller", "components.ppc:Caller", priority=100,
                                         fault_policy="restart", max_restarts=1))
    server = sdf.add_pd(ProtectionDomain("server", "components.ppc:Server", priority=200,
                                         fault_policy="restart", max_restarts=1, config={"die_at": 120}))
    sdf.add_channel(Channel(caller, server, pp_a=True, id_a=0, id_b=0))
"""


def test_callee_dying_mid_call_fails_the_caller(systems: Start) -> None:
    run = systems("ppc", SYSTEM)
    run.wait_for(r"^caller: call 100 -> 0 \[101\]$")
    died = run.wait_for(r"^PD server faulted: exited with status 9")
    failed = run.wait_for(r"^PD caller faulted: ConnectionError: .*'caller'.*\(server\) faulted during the call",
                          after=died.index)
    assert failed.at - died.at < 1.0, run.output()
    # both restart; the caller's fresh calls are answered by the fresh server
    run.wait_for(r"^caller: call 50 -> 0 \[51\]$", after=failed.index)


def test_a_callee_stuck_in_protected_is_a_fault_and_its_caller_is_answered(systems: Start) -> None:
    """The callee's watchdog sees it stuck in one handler: it is killed as a fault, and the caller
    blocked in its call gets "callee faulted" instead of waiting forever."""
    run = systems("ppc", SYSTEM.replace('config={"die_at": 120}', 'config={"hang_at": 120, "die_at": 0}, watchdog_s=1.0'))
    run.wait_for(r"^caller: call 100 -> 0 \[101\]$")
    stuck = run.wait_for(r"^PD server faulted: watchdog: stuck in one handler for over 1 s$")
    run.wait_for(r"^PD caller faulted: ConnectionError: .*\(server\) faulted during the call", after=stuck.index)
    run.wait_for(r"^caller: call 50 -> 0 \[51\]$", after=stuck.index)
