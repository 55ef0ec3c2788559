"""Swap: a running PD's program is replaced by another of the same kind while traffic flows,
and traffic resumes; a program of another kind is refused and the old one keeps running."""
from __future__ import annotations

import pytest

from monitor_fixtures import Start, SystemRun, run_dir, systems  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

PINGPONG = "add_pingpong(sdf, report_every_s=0.2)"
REPORT = r"^ping: [\d,]+ round trips/s, counters ok$"


def ping_reports(run: SystemRun, after: int, count: int = 2) -> None:
    """Wait for ``count`` ping reports from line ``after`` on (ping checks every counter it gets back)."""
    for _ in range(count):
        after = run.wait_for(REPORT, after=after).index + 1


def test_swap_to_the_same_kind_mid_traffic(systems: Start) -> None:
    run = systems("swap", PINGPONG)
    run.wait_for(REPORT)
    old_pid = run.status()["pong"]["pid"]
    done = run.cli("swap", "pong", "components.counter:CountingPong")
    assert done.returncode == 0, done.stderr
    assert "PD pong now runs components.counter:CountingPong" in done.stdout
    run.wait_for(r"^PD pong: swapped to components.counter:CountingPong$")
    running = run.wait_for(r"^pong: CountingPong running as pid (\d+)$")
    run.wait_for(r"^pong: CountingPong bounced \d+ counters$", after=running.index)
    ping_reports(run, running.index)
    pong = run.status()["pong"]
    assert (pong["pid"], pong["program"], pong["state"]) == (
        int(running.match[1]), "components.counter:CountingPong", "running")
    assert pong["pid"] != old_pid
    assert not run.matching(r"faulted"), run.output()


def process_of(status: dict) -> tuple:
    """What a refused swap must leave as it was (not the counts of a PD that runs on)."""
    return tuple(status[key] for key in ("pid", "program", "state", "restarts", "last_fault"))


def test_swap_to_another_kind_is_refused(systems: Start) -> None:
    run = systems("swap", PINGPONG)
    run.wait_for(REPORT)
    before = process_of(run.status()["pong"])
    refused = run.cli("swap", "pong", "components.faulty:Faulty")
    assert refused.returncode != 0
    assert ("cannot swap PD 'pong' from 'sddf.apps.pingpong:Pong' (kind 'pingpong') to "
            "'components.faulty:Faulty' (kind 'component'): kinds differ") in refused.stderr
    ping_reports(run, run.mark())
    assert process_of(run.status()["pong"]) == before
    assert not run.matching(r"^PD pong: |faulted"), run.output()


def test_a_swap_whose_new_program_faults_in_init_is_rolled_back(systems: Start) -> None:
    run = systems("swap", PINGPONG)
    run.wait_for(REPORT)
    refused = run.cli("swap", "pong", "components.bad_swap:FailingPong")
    assert refused.returncode != 0
    assert "faulted in init: RuntimeError: FailingPong fails in init on purpose" in refused.stderr
    assert "rolled back to 'sddf.apps.pingpong:Pong'" in refused.stderr
    pong = run.status()["pong"]
    assert (pong["program"], pong["state"]) == ("sddf.apps.pingpong:Pong", "running")
    ping_reports(run, run.mark())  # traffic flows again through the old program


@pytest.mark.parametrize("module, problem", [
    ("components.exit_at_import", "cannot load 'components.exit_at_import:Pong': exit status 3"),
    ("components.hang_at_import", "loading 'components.hang_at_import:Pong' took longer than"),
], ids=["exits", "hangs"])
def test_a_program_whose_import_exits_or_hangs_cannot_take_the_monitor_down(
        systems: Start, module: str, problem: str) -> None:
    run = systems("swap", PINGPONG)
    run.wait_for(REPORT)
    before = process_of(run.status()["pong"])
    refused = run.cli("swap", "pong", f"{module}:Pong")
    assert refused.returncode != 0 and problem in refused.stderr, refused.stderr
    assert process_of(run.status()["pong"]) == before, "the old program runs on, untouched"
    ping_reports(run, run.mark())
