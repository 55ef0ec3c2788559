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
