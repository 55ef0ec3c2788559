"""A confined PD: after init it cannot reopen its read-only regions for writing, read another
process's memory, open files or sockets, or run programs (each attempt refused, the PD runs on);
it runs as nobody, non-dumpable; its memory cap holds."""
from __future__ import annotations

import os

import pytest

from monitor_fixtures import Start, run_dir, systems  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

SNOOP = """
    from sddf.system import Irq, Map, MemoryRegion, ProtectionDomain
    shared = sdf.add_mr(MemoryRegion("shared", PAGE_SIZE))
    writer = add_faulty(sdf, "writer", action="idle")
    writer.add_map(Map(shared, "rw", "shared"))
    snoop = sdf.add_pd(ProtectionDomain("snoop", "components.snoop:Snoop", {extra}))
    snoop.add_map(Map(shared, "r", "shared"))
    snoop.config.update(irq=sdf.add_irq(Irq(snoop, "timerfd")).id{config})
"""
ATTEMPTS = ["reopen a read-only region for writing", "read the monitor's memory file",
            "read the monitor's memory directly", "trace the monitor", "open a file", "open a socket",
            "run a program"]


def test_every_forbidden_attempt_is_refused_and_the_pd_runs_on(systems: Start) -> None:
    run = systems("snoop", SNOOP.format(extra="", config=""))
    done = run.wait_for(r"^snoop: done$")
    said = {line.text.split(": ", 2)[1]: line.text.split(": ", 2)[2] for line in run.matching(r"^snoop: [^:]+: ")}
    assert sorted(said) == sorted(ATTEMPTS), run.output()
    assert all(outcome.startswith("refused") for outcome in said.values()), said
    status = run.status()["snoop"]
    assert status["state"] == "running" and not run.matching(r"faulted", after=done.index)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs a root monitor")
def test_pds_run_as_nobody_and_are_not_dumpable(systems: Start) -> None:
    run = systems("snoop", SNOOP.format(extra="", config=""))
    run.wait_for(r"^snoop: done$")
    pid = run.status()["snoop"]["pid"]
    with open(f"/proc/{pid}/status") as status:
        uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {"65534"}
    assert os.stat(f"/proc/{pid}/mem").st_uid == 0, "a dumpable PD's memory file would be its own uid's"


def test_a_pd_over_its_memory_cap_faults(systems: Start) -> None:
    run = systems("snoop", SNOOP.format(extra="memory_bytes=256 << 20", config=", hog_bytes=512 << 20"))
    run.wait_for(r"^PD snoop faulted: MemoryError")
    assert not run.matching(r"^snoop: hogged$")
