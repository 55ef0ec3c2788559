"""Shutdown: SIGINT or SIGTERM to the monitor stops the whole system within seconds and leaves
nothing behind: no PD process, no control socket, no named shm region, no fd in the monitor."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from monitor_fixtures import (Start, leftovers, run_dir, system_pids, systems,  # noqa: F401 - fixtures
                              write_system)
from sddf.cli import load_system
from sddf.monitor import Monitor

pytestmark = pytest.mark.timeout(60)

STOP_WITHIN_S = 10.0  # "a few seconds": one SIGTERM grace period for the stubborn PD, plus noise
SYSTEM = """
    shared = sdf.add_mr(MemoryRegion("down_shared", PAGE_SIZE))
    reader = add_faulty(sdf, "reader", action="idle")
    reader.add_map(Map(shared, "r", "shared"))
    stubborn = add_faulty(sdf, "stubborn", action="idle", ignore_sigterm=True, priority=110)
    stubborn.add_map(Map(shared, "rw", "shared"))
    sdf.add_channel(Channel(reader, stubborn, pp_a=True))
    add_ticker(sdf)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_system_and_leaves_nothing(systems: Start, sig: signal.Signals) -> None:
    run = systems("down", SYSTEM)
    for pd in ("reader", "stubborn"):
        run.wait_for(rf"^{pd}: boot 1 pid \d+$")
    run.wait_for(r"^ticker: tick 1$")
    pids = [pd["pid"] for pd in run.status().values()]
    assert None not in pids
    run.proc.send_signal(sig)
    assert run.wait(STOP_WITHIN_S) == 0, run.output()
    run.wait_for(rf"^monitor: got {sig.name}; stopping$")
    assert leftovers(run, pids) == []
    assert not run.matching(r"faulted"), run.output()


def open_fds() -> dict[int, str]:
    """This process's open fds and what each refers to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the directory listing's own fd, closed by now
            pass
    return fds


def own_shm() -> set[Path]:
    """Named regions this process created (and has not removed yet)."""
    return set(Path("/dev/shm").glob(f"sddf-{os.getpid()}-*"))


def test_in_process_monitor_releases_every_fd(run_dir: Path) -> None:
    """A herald PD faults at boot (so every PD has been started); the log hook then sends SIGINT."""
    sdf = load_system(str(write_system(run_dir, "inproc", SYSTEM + """
    add_faulty(sdf, "herald", at_init=True, max_restarts=5)
    """)))
    before, children, shm = open_fds(), psutil.Process().children(), own_shm()
    log: list[str] = []

    def record(message: str) -> None:
        log.append(message)
        if message.startswith("PD herald faulted"):
            os.kill(os.getpid(), signal.SIGINT)

    assert Monitor(sdf, log=record, run_dir=str(run_dir)).run(duration=30) == 0
    assert "monitor: got SIGINT; stopping" in log, log
    after = open_fds()
    assert after == before, (f"opened: {dict(after.items() - before.items())}, "
                             f"closed: {dict(before.items() - after.items())}")
    assert psutil.Process().children() == children  # e.g. a shm reaper of an earlier test
    assert system_pids(run_dir) == []
    assert own_shm() == shm
    assert not (run_dir / "inproc.sock").exists()
