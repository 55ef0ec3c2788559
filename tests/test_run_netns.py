"""``sddf run --netns``: the wrapper that made the namespace and the monitor inside it die together.

The namespace is created only by the command under test, and any it leaves is deleted here,
even when the test fails. No traffic is sent: the system is pingpong, which has no device.
"""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from helpers.sddf_cli import REPO, SDDF
from sddf.tools.netns import can_make_named

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not can_make_named(), reason="a named network namespace needs root and iproute2")]

GONE_WITHIN_S = 10.0  # the monitor's stop: one SIGTERM grace period for its PDs, plus noise
UP_WITHIN_S = 15.0


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def wait_for_line(proc: subprocess.Popen[str], text: str) -> None:
    """Read ``proc``'s output (on a thread: the pipe outlives it) until a line contains ``text``."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(UP_WITHIN_S), f"no line with {text!r}; output:\n{''.join(seen)}"


def wait_until_gone(netns: str) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while netns in namespaces():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_kill_9_of_the_wrapper_stops_the_monitor_and_its_pds(tmp_path: Path) -> None:
    wrapper = subprocess.Popen([SDDF, "run", "pingpong", "--netns", "--run-dir", str(tmp_path)], cwd=REPO,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    netns = f"sddf-pingpong-{wrapper.pid}"
    system: list[psutil.Process] = []
    try:
        wait_for_line(wrapper, "counters ok")
        [monitor] = psutil.Process(wrapper.pid).children()
        system = [monitor, *monitor.children()]
        assert sorted(p.name() for p in system[1:]) == ["ping", "pong"]
        assert netns in namespaces()
        wrapper.kill()
        wrapper.wait()
        _, alive = psutil.wait_procs(system, timeout=GONE_WITHIN_S)
        assert not alive, f"still running after the wrapper's SIGKILL: {alive}"
        assert wait_until_gone(netns), f"namespace {netns} was left behind"
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
        for proc in system:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(system, timeout=GONE_WITHIN_S)
        if netns in namespaces():
            subprocess.run(["ip", "netns", "del", netns], check=True)
