"""Faults: a PD that raises, exits or is killed is reported by name, with the reason, within a
second; its policy then applies: restart (a new process, its regions intact, the rest of the
system untouched) or, once restarts run out or under "stop", a clean stop of the whole system."""
from __future__ import annotations

import signal
import time

import psutil
import pytest

from monitor_fixtures import Start, leftovers, run_dir, strike, systems  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

REPORT_WITHIN_S = 1.0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("action, sig, reason", [
    ("raise", signal.SIGUSR1, r"RuntimeError: victim fails on purpose"),
    ("exit:3", signal.SIGUSR1, r"exited with status 3"),
    ("idle", signal.SIGKILL, r"killed by SIGKILL"),
    ("orphan:30", signal.SIGUSR1, r"RuntimeError: victim fails on purpose"),
], ids=["raise", "exit", "sigkill", "orphan"])
def test_fault_reported_within_a_second_then_restarted_with_regions_intact(
        systems: Start, action: str, sig: signal.Signals, reason: str) -> None:
    run = systems("faults", f"""
        add_ticker(sdf)
        add_faulty(sdf, "victim", action={action!r})
    """)
    run.wait_for(r"^victim: boot 1 ")
    monitor = psutil.Process(run.proc.pid)
    monitor_fds = monitor.num_fds()
    old_pid, sent, mark = strike(run, "victim", sig)
    fault = run.wait_for(rf"^PD victim faulted: {reason}", after=mark, timeout=2 * REPORT_WITHIN_S)
    assert fault.at - sent < REPORT_WITHIN_S, f"fault reported {fault.at - sent:.3f} s after it happened"

    children = [int(line.text.rsplit(" ", 1)[1]) for line in run.matching(r"^victim: left child \d+$", after=mark)]
    deadline = time.monotonic() + REPORT_WITHIN_S  # SIGKILLed with the PD: dead once the kernel delivers it
    while (outlived := [pid for pid in children if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not outlived, "a process the PD started outlived it"
    run.wait_for(r"^PD victim: restart 1/3 in ", after=fault.index)
    reboot = run.wait_for(r"^victim: boot 2 pid (\d+)$", after=fault.index)  # count kept in its region
    status = run.status()
    assert status["victim"]["pid"] == int(reboot.match[1]) != old_pid
    assert (status["victim"]["state"], status["victim"]["restarts"]) == ("running", 1)
    assert status["victim"]["last_fault"] == fault.text.removeprefix("PD victim faulted: ")

    run.wait_for(r"^ticker: tick \d+$", after=run.mark())  # the rest runs on (and the monitor is idle)
    assert monitor.num_fds() == monitor_fds, "the monitor holds another number of fds after the restart"
    assert (status["ticker"]["state"], status["ticker"]["restarts"]) == ("running", 0)
    assert not run.matching(r"^PD ticker faulted")


def test_bounded_restarts_end_in_a_clean_stop(systems: Start) -> None:
    run = systems("doomed", """
        add_ticker(sdf)
        add_faulty(sdf, "doomed", action="raise", at_init=True, max_restarts=2)
    """)
    assert run.wait() == 1, run.output()
    faults = run.matching(r"^PD doomed faulted: RuntimeError: doomed fails on purpose$")
    assert len(faults) == 3, run.output()
    assert [line.text for line in run.matching(r"^PD doomed: restart \d")] == [
        "PD doomed: restart 1/2 in 0.0s", "PD doomed: restart 2/2 in 0.1s"]
    assert run.matching(r"^doomed: boot 3 pid \d+$"), run.output()
    gave_up = run.wait_for(r"^PD doomed: gave up after 2 restarts within 60s; stopping the system$")
    assert gave_up.index > faults[-1].index
    assert leftovers(run) == []


def test_stop_policy_stops_the_whole_system(systems: Start) -> None:
    run = systems("fragile", """
        add_ticker(sdf)
        add_faulty(sdf, "fragile", policy="stop", action="exit:3")
    """)
    pid, _, mark = strike(run, "fragile", signal.SIGUSR1)
    assert run.wait() == 1, run.output()
    run.wait_for(r"^PD fragile faulted: exited with status 3$", after=mark)
    assert not run.matching(r"restart"), run.output()
    assert leftovers(run, [pid]) == []


def test_a_signal_the_pd_handles_itself_is_no_fault(systems: Start) -> None:
    run = systems("calm", """
        add_ticker(sdf)
        add_faulty(sdf, "calm", action="idle")
    """)
    pid, _, mark = strike(run, "calm", signal.SIGUSR1)  # its handler does nothing
    for _ in range(3):
        mark = run.wait_for(r"^ticker: tick \d+$", after=mark).index + 1
    assert not run.matching(r"^PD calm "), run.output()
    assert (run.status()["calm"]["pid"], run.status()["calm"]["restarts"]) == (pid, 0)


def test_a_pd_stuck_in_a_handler_is_a_fault_under_its_watchdog(systems: Start) -> None:
    """A PD spinning in a handler (here init) past its watchdog_s is killed and its policy applies;
    one without a watchdog is left alone."""
    run = systems("stuck", """
        add_ticker(sdf)
        add_faulty(sdf, "spinner", action="spin", at_init=True, max_restarts=1).watchdog_s = 0.5
    """)
    first = run.wait_for(r"^PD spinner faulted: watchdog: stuck in one handler for over 0.5 s$")
    run.wait_for(r"^PD spinner: restart 1/1 in ", after=first.index)
    run.wait_for(r"^PD spinner faulted: watchdog: ", after=first.index + 1)
    assert run.wait() == 1, run.output()
    assert not run.matching(r"^PD ticker faulted")
