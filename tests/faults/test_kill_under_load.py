"""kill -9 under load, through real processes: each PD type of the echo system, several times in a row.

The bundled echo system runs in a network namespace made here, with a steady UDP echo load on
both clients from inside it (tests/faults/load.py). For each component type a PD of that type
is sent SIGKILL at a random moment (seeded) while frames flow, KILLS_PER_TYPE times in a row;
then each PD is killed at chosen points of its work: restarted with ``kill_at_write`` (it kills
itself just before that write to shared memory, see sddf.faults), INJECTIONS times. After each
kill: the monitor runs it again, every client on its path answers again within RESUME_BOUND_S
of the kill, and ``sddf audit`` (the load paused) finds every buffer of every pool in exactly
one place.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from sddf.tools.netns import tap_unavailable
from test_net_system import CLIENTS, EchoSystem, running_echo

pytestmark = [pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or ""),
              pytest.mark.timeout(300)]

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
LOAD, SYSTEM = HERE / "load.py", HERE / "echo_restarting.py"
RATE_PPS = 2000         # requests/s to each client: PDs busy enough that kills land inside handlers
KILLS_PER_TYPE = 4
INJECTIONS = 4          # kills at chosen writes per PD
LAST_WRITE = 150        # chosen among its first writes after a restart
RESUME_BOUND_S = 5.0    # from the kill until every client on the PD's path answers again
RESTART_BOUND_S = 5.0
BOTH = list(CLIENTS)
TYPES = {"eth_driver": ["eth_driver"], "net_virt_rx": ["net_virt_rx"], "net_virt_tx": ["net_virt_tx"],
         "copier": ["client1_copier"], "client": ["client0", "client1"]}
PATH = {"eth_driver": BOTH, "net_virt_rx": BOTH, "net_virt_tx": BOTH,
        "client1_copier": ["client1"], "client0": ["client0"], "client1": ["client1"]}


class Loaded:
    """The echo system with the load running against it."""

    def __init__(self, echo: EchoSystem, progress: Path) -> None:
        self.echo, self.progress = echo, progress
        self.load = subprocess.Popen(
            echo.ns.exec_prefix() + [sys.executable, str(LOAD), str(progress), str(RATE_PPS), "600",
                                     *CLIENTS.values()], env=echo.env)

    def last_answer(self, client: str) -> float:
        try:
            return json.loads(self.progress.read_text())["last"][CLIENTS[client]]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0.0

    def pd(self, name: str) -> dict[str, Any]:
        return next(pd for pd in self.echo.control({"cmd": "status"})[0]["pds"] if pd["name"] == name)

    def audit(self) -> subprocess.CompletedProcess[str]:
        """``sddf audit`` on the quiet system (the load paused meanwhile)."""
        pause = Path(f"{self.progress}.pause")
        pause.touch()
        try:
            return subprocess.run([sys.executable, "-m", "sddf.cli", "audit", "--system", "echo",
                                   "--run-dir", self.echo.env["SDDF_RUN_DIR"]],
                                  capture_output=True, text=True, timeout=60)
        finally:
            pause.unlink()

    def stop(self) -> None:
        Path(f"{self.progress}.stop").touch()
        try:
            self.load.wait(10)
        except subprocess.TimeoutExpired:
            self.load.kill()
            self.load.wait()


def until(check: Callable[[], T | None], bound_s: float) -> T | None:
    deadline = time.monotonic() + bound_s
    while (got := check()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    work = tmp_path_factory.mktemp("faults")
    with running_echo("faults", work, str(SYSTEM)) as echo:
        load = Loaded(echo, work / "progress.json")
        try:
            started = time.monotonic()
            assert until(lambda: all(load.last_answer(c) > started for c in CLIENTS) or None, 10), "no load answered"
            yield load
        finally:
            load.stop()


def survived(loaded: Loaded, pd: str, before: dict[str, Any], killed_at: float, what: str) -> None:
    """``pd`` runs again, its path answers within RESUME_BOUND_S of the kill, the audit is clean."""
    after = until(lambda: (s := loaded.pd(pd))["state"] == "running" and s["pid"] != before["pid"]
                  and s["restarts"] > before["restarts"] and s or None, RESTART_BOUND_S)
    assert after is not None, f"{what}: {pd} was not restarted after a fault: {loaded.pd(pd)}"
    restarted_at = time.monotonic()
    resumed = until(lambda: all(loaded.last_answer(c) > restarted_at for c in PATH[pd]) or None,
                    max(0.0, RESUME_BOUND_S - (restarted_at - killed_at)))
    outage = time.monotonic() - killed_at
    assert resumed, f"{what}: {PATH[pd]} did not answer again within {RESUME_BOUND_S} s"
    audit = loaded.audit()
    assert audit.returncode == 0, f"{what} (outage {outage:.2f} s):\n{audit.stdout}{audit.stderr}"


@pytest.mark.parametrize("kind", TYPES)
def test_kill_9_at_random_moments_under_load(loaded: Loaded, kind: str) -> None:
    rnd = random.Random(kind)
    for round_ in range(KILLS_PER_TYPE):
        pd = rnd.choice(TYPES[kind])
        time.sleep(rnd.uniform(0.05, 0.5))  # a random moment in its work
        before = loaded.pd(pd)
        assert before["state"] == "running", before
        killed_at = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        survived(loaded, pd, before, killed_at, f"kill {round_ + 1} of {pd}")


@pytest.mark.parametrize("pd", PATH)
def test_killed_before_chosen_writes_to_shared_memory_under_load(loaded: Loaded, pd: str) -> None:
    for write in sorted(random.Random(pd).sample(range(1, LAST_WRITE + 1), INJECTIONS)):
        before = loaded.pd(pd)
        loaded.echo.control({"cmd": "restart", "pd": pd, "kill_at_write": write})
        armed = loaded.pd(pd)  # the armed instance: a request restart is not a fault
        assert armed["restarts"] == before["restarts"]
        survived(loaded, pd, armed, time.monotonic(), f"{pd} killed before its write {write}")
        assert f"PD {pd} faulted: killed by SIGKILL" in loaded.echo.log.read_text()


def test_the_monitor_log_shows_no_other_fault(loaded: Loaded) -> None:
    log = loaded.echo.log.read_text()
    assert "Traceback" not in log, log[-3000:]
