"""``sddf run --shm posix``: every memory region of the system is a named POSIX region, announced
once at start, that an outside process can open by that name; the PDs map those very regions
(still through the fds the monitor passes them); stopping the system unlinks them, and the
reaper does when the monitor is killed with SIGKILL.

Only the names this test's monitor printed (they carry its pid) are checked: other tests may
have named regions of their own in /dev/shm meanwhile.
"""
from __future__ import annotations

import mmap
import os
import re
import signal
import struct
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from monitor_fixtures import SystemRun, leftovers, run_dir  # noqa: F401 - fixtures
from sddf.apps.systems.pingpong import system as pingpong_system
from sddf.monitor import Monitor
from sddf.net.queue import LAYOUT

pytestmark = pytest.mark.timeout(60)

ANNOUNCED = r"^monitor: memory region '(\w+)' is shared as (/sddf-\d+-\w+)$"
TRAFFIC = r"^ping: [\d,]+ round trips/s, counters ok$"
GONE_WITHIN_S = 5.0  # the reaper is a detached process: nothing to block on but a poll
POLL_S = 0.02


@pytest.fixture
def pingpong(run_dir: Path) -> Iterator[SystemRun]:
    run = SystemRun("pingpong", "pingpong", run_dir, ["--shm", "posix"])
    try:
        yield run
    finally:
        run.close()


def announced(run: SystemRun) -> dict[str, Path]:
    """Each region's /dev/shm path, as the monitor announced it."""
    regions = {mr.name for mr in pingpong_system().regions}
    paths: dict[str, Path] = {}
    after = 0
    while set(paths) != regions:
        line = run.wait_for(ANNOUNCED, after=after)
        assert line.match is not None
        paths[line.match[1]] = Path("/dev/shm" + line.match[2])
        after = line.index + 1
    assert all(path.name.startswith(f"sddf-{run.proc.pid}-") for path in paths.values()), paths
    return paths


def eventually(condition: Callable[[], bool], within: float = GONE_WITHIN_S) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def existing(paths: dict[str, Path]) -> list[Path]:
    return [path for path in paths.values() if path.exists()]


def tail(queue: mmap.mmap) -> int:
    (value,) = struct.unpack_from("<H", queue, LAYOUT.tail_offset)
    return value


def test_named_regions_are_opened_from_outside_and_unlinked_on_stop(pingpong: SystemRun) -> None:
    paths = announced(pingpong)
    pingpong.wait_for(TRAFFIC)
    assert existing(paths) == list(paths.values())
    ping = pingpong.status()["ping"]["pid"]
    maps = Path(f"/proc/{ping}/maps").read_text()
    assert all(str(path) in maps for path in paths.values()), f"ping does not map the named regions:\n{maps}"

    # an outside process (this one) opens the active queue by name and sees ping move its tail
    fd = os.open(paths["pp_active"], os.O_RDONLY)
    try:
        with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ) as active:
            first = tail(active)
            assert eventually(lambda: tail(active) != first, within=2.0), "the named region is not the live queue"
    finally:
        os.close(fd)

    pingpong.proc.send_signal(signal.SIGINT)
    assert pingpong.wait() == 0, pingpong.output()
    assert existing(paths) == [], "stopping the system left named regions"
    assert len(pingpong.matching(ANNOUNCED)) == len(paths), pingpong.output()
    assert eventually(lambda: not leftovers(pingpong)), leftovers(pingpong)  # the reaper exits after the monitor


def test_the_monitor_itself_unlinks_its_regions_when_it_stops(run_dir: Path) -> None:
    """In process, so the reaper (which would unlink them once the monitor's process exits) is
    still waiting: only the monitor can have removed them."""
    log: list[str] = []
    assert Monitor(pingpong_system(), log=log.append, run_dir=str(run_dir), shm="posix").run(duration=0.5) == 0
    names = [found[2] for line in log if (found := re.match(ANNOUNCED, line))]
    assert len(names) == len(pingpong_system().regions), log
    assert [name for name in names if Path("/dev/shm" + name).exists()] == []


def test_the_reaper_unlinks_the_regions_of_a_killed_monitor(pingpong: SystemRun) -> None:
    paths = announced(pingpong)
    pingpong.wait_for(TRAFFIC)
    assert existing(paths) == list(paths.values())
    os.kill(pingpong.proc.pid, signal.SIGKILL)
    pingpong.proc.wait()
    assert eventually(lambda: not existing(paths)), f"still there {GONE_WITHIN_S} s later: {existing(paths)}"
