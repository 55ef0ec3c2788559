"""A parent PD's fault() decides whether its child restarts; the rest of the system runs on."""
from __future__ import annotations

from monitor_fixtures import Start, run_dir, systems  # noqa: F401 - fixtures

SYSTEM = """
    from sddf.system import ProtectionDomain
    parent = sdf.add_pd(ProtectionDomain("parent", "components.family:Parent", priority=120))
    child = sdf.add_pd(ProtectionDomain("kid", "components.family:FailingChild", priority=100))
    assert parent.add_child_pd(child, 5) == 5
    add_ticker(sdf)
"""


def test_parent_restarts_its_child_until_it_declines(systems: Start) -> None:
    run = systems("family", SYSTEM)
    first = run.wait_for(r"^parent: child 5 faulted \(RuntimeError: kid fails at start\); fault 1$")
    run.wait_for(r"^PD kid: restarted by its parent parent \(1/3\)$", after=first.index)
    run.wait_for(r"^parent: child 5 faulted .*; fault 3$", after=first.index)
    declined = run.wait_for(r"^PD kid: left stopped by its parent parent$", after=first.index)
    ticks = run.wait_for(r"^ticker: tick \d+$", after=declined.index)  # the system runs on
    status = run.status()
    assert status["kid"]["state"] == "faulted" and status["parent"]["state"] == "running", status
    assert status["ticker"]["state"] == "running", (status, ticks)
