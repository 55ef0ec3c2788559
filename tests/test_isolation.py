"""Isolation: a PD holds only the regions its maps grant, with the rights they grant; reaching
past them faults that PD alone, reported by its name, while the rest of the system runs on."""
from __future__ import annotations

import os
import re
import signal

import pytest

from monitor_fixtures import Start, run_dir, strike, systems  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(60)

SYSTEM = """
    shared = sdf.add_mr(MemoryRegion("iso_shared", PAGE_SIZE))
    secret = sdf.add_mr(MemoryRegion("iso_secret", PAGE_SIZE))
    owner = add_faulty(sdf, "owner", action="idle")
    owner.add_map(Map(shared, "rw", "shared"))
    owner.add_map(Map(secret, "rw", "secret"))
    for name, action in (("peeker", "peek:secret"), ("scribbler", "write:shared"), ("poker", "store:shared")):
        add_faulty(sdf, name, action=action).add_map(Map(shared, "r", "shared"))
    add_ticker(sdf)
"""
GRANTS = {  # PD -> the regions (memfd "sddf:<name>") its maps grant, each "r" or "rw"
    "owner": [("iso_secret", "rw"), ("iso_shared", "rw"), ("owner_state", "rw")],
    "peeker": [("iso_shared", "r"), ("peeker_state", "rw")],
    "scribbler": [("iso_shared", "r"), ("scribbler_state", "rw")],
    "poker": [("iso_shared", "r"), ("poker_state", "rw")],
    "ticker": [("ticker_state", "rw")],
}
MEMFD = re.compile(r"/memfd:sddf:(\S+) \(deleted\)")


def held_regions(pid: int) -> list[tuple[str, str]]:
    """The sddf memfds ``pid`` has open, each with its open mode ("r" or "rw"), once each
    (mmap.mmap keeps a dup of the fd it maps)."""
    held: set[tuple[str, str]] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found = MEMFD.fullmatch(os.readlink(f"/proc/{pid}/fd/{fd}"))
            if found:
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = int(re.search(r"^flags:\s*([0-7]+)$", info.read(), re.M)[1], 8)
                held.add((found[1], "rw" if flags & os.O_ACCMODE == os.O_RDWR else "r"))
        except FileNotFoundError:  # closed while we looked
            pass
    return sorted(held)


def mapped_regions(pid: int) -> list[tuple[str, str]]:
    """The sddf memfds mapped in ``pid``'s address space, each "r" or "rw" (all MAP_SHARED)."""
    mapped: set[tuple[str, str]] = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            found = MEMFD.search(line)
            if found:
                perms = line.split()[1]
                assert perms.endswith("s"), f"PD {pid} maps {found[1]} privately: {line}"
                mapped.add((found[1], "rw" if perms[1] == "w" else "r"))
    return sorted(mapped)


def test_pd_holds_and_maps_only_its_granted_regions(systems: Start) -> None:
    run = systems("isolation", SYSTEM)
    run.wait_for(r"^ticker: tick 1$")
    for pd in GRANTS:
        if pd != "ticker":
            run.wait_for(rf"^{pd}: boot 1 pid \d+$")
    status = run.status()
    for pd, maps in GRANTS.items():
        grants = sorted(maps + [(f"stats:{pd}", "rw"), (f"ledger:{pd}", "rw")])  # and its own pages from the monitor
        held, mapped = held_regions(status[pd]["pid"]), mapped_regions(status[pd]["pid"])
        assert held == grants, f"PD {pd} was granted {grants} but holds fds of {held}"
        assert mapped == grants, f"PD {pd} was granted {grants} but maps {mapped}"


VIOLATIONS = {  # PD -> how the monitor reports what it did (the "r" map is "shared")
    "peeker": r"GrantError: PD 'peeker' has no map named 'secret' \(it was granted: \['shared', 'state'\]\)$",
    "scribbler": r"TypeError: cannot modify read-only memory$",
    "poker": r"killed by SIGSEGV",
}


def test_overstepping_a_grant_faults_only_that_pd(systems: Start) -> None:
    run = systems("isolation", SYSTEM)
    for pd, reason in VIOLATIONS.items():
        _, _, mark = strike(run, pd, signal.SIGUSR1)
        fault = run.wait_for(rf"^PD {pd} faulted: {reason}", after=mark)
        run.wait_for(r'File ".*faulty\.py", line \d+,? in act$', after=fault.index)  # its traceback
        run.wait_for(rf"^{pd}: boot 2 pid \d+$", after=fault.index)
    last = run.mark()
    for _ in range(3):
        last = run.wait_for(r"^ticker: tick \d+$", after=last).index + 1
    faulted = [line.text.split()[1] for line in run.matching(r"^PD \S+ faulted: ")]
    assert faulted == list(VIOLATIONS), run.output()
    status = run.status()
    assert {pd: (st["state"], st["restarts"]) for pd, st in status.items()} == {
        pd: ("running", 1 if pd in VIOLATIONS else 0) for pd in GRANTS}
