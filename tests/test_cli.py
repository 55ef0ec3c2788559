"""The ``sddf`` command: help, check, xml, graph, and the control commands against a running system."""
from __future__ import annotations

import argparse
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from xml.etree import ElementTree as ET

import pytest

from components import importable
from helpers.sddf_cli import REPO, SDDF, sddf
from sddf.apps.systems import timer
from sddf.cli import TOOLS, main, parser

pytestmark = pytest.mark.timeout(30)

TIMER_PDS = ["timer_driver", "client1", "client2"]
LINE_TIMEOUT_S = 15  # a generous bound on waiting for a line from a running system
STATUS_LINE = re.compile(r"^(\S+)\s+(\S+)\s+pid (\S+)", re.MULTILINE)


def subcommands() -> dict[str, str]:
    """Each subcommand's name and description, as the parser defines them."""
    [action] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: sub.description for name, sub in action.choices.items()}


def words(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_command() -> None:
    run = sddf("--help")
    assert run.returncode == 0, run.stderr
    assert "usage: sddf" in run.stdout
    for name in ["run", "check", "xml", "graph", "top", "status", "swap", "restart", "stop", "audit", "sim", "fuzz"]:
        assert re.search(rf"^\s+{name}\s+\w", run.stdout, re.MULTILINE), f"{name} missing from --help"


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    description = subcommands()[command]
    assert description and len(description.split()) >= 4, f"sddf {command} needs a real description"
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sddf {command}")
    if command not in TOOLS:  # those print their own parser's (longer) description
        assert words(description) in words(out)


@pytest.mark.parametrize("system", ["timer", "apps/systems/pingpong.py"])
def test_check_accepts_the_bundled_systems(system: str) -> None:
    run = sddf("check", system)
    assert run.returncode == 0, run.stderr
    assert "valid" in run.stdout


def test_check_of_a_broken_system_names_the_culprit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    importable(monkeypatch)
    broken = tmp_path / "broken.py"
    broken.write_text(
        "from sddf.system import Channel, ProtectionDomain, SystemDescription\n\n\n"
        "def system():\n"
        "    sdf = SystemDescription('broken')\n"
        "    low = sdf.add_pd(ProtectionDomain('lowly', 'components.basic:Thing', priority=10))\n"
        "    high = sdf.add_pd(ProtectionDomain('mighty', 'components.basic:Thing', priority=20))\n"
        "    sdf.add_channel(Channel(high, low, pp_a=True))\n"
        "    return sdf\n")
    run = sddf("check", str(broken))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "PPC from 'mighty'" in run.stderr and "into 'lowly'" in run.stderr


def test_xml_writes_the_microkit_description(tmp_path: Path) -> None:
    out = tmp_path / "timer.xml"
    run = sddf("xml", "timer", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert out.read_text() == timer.system().render()
    assert [pd.get("name") for pd in ET.parse(out).getroot().iter("protection_domain")] == TIMER_PDS


def test_graph_prints_dot_with_every_pd() -> None:
    run = sddf("graph", "timer")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('digraph "timer" {') and run.stdout.rstrip().endswith("}")
    for name in TIMER_PDS:
        assert f'\n  "{name}" [' in run.stdout, f"no node for {name}"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_graph_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    run = sddf("graph", "timer", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# ---- a running system ------------------------------------------------------------------------
@dataclass
class Running:
    """``sddf run pingpong`` in the background; its stdout and stderr merged, line by line."""

    run_dir: Path
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> str:
        """The next line containing ``text`` (blocking; earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {LINE_TIMEOUT_S}s; output so far:\n{self.output()}")
            if line is None:
                pytest.fail(f"the run ended before a line with {text!r}; output:\n{self.output()}")
            self.seen.append(line)
            if text in line:
                return line

    def output(self) -> str:
        return "".join(self.seen)

    def sddf(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``sddf COMMAND`` against this run's run directory."""
        return sddf(command, "--run-dir", str(self.run_dir), *args)

    def status(self) -> dict[str, tuple[str, str]]:
        """``sddf status`` as {PD: (state, pid)}."""
        run = self.sddf("status")
        assert run.returncode == 0, run.stderr
        return {name: (state, pid) for name, state, pid in STATUS_LINE.findall(run.stdout)}

    def rest(self) -> str:
        """All the output, once the run has ended."""
        while (line := self.lines.get(timeout=LINE_TIMEOUT_S)) is not None:
            self.seen.append(line)
        return self.output()


@pytest.fixture
def pingpong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("COLUMNS", "200")  # rich would wrap `sddf top` tables at 80 columns
    running = Running(tmp_path, subprocess.Popen([SDDF, "run", "pingpong", "--run-dir", str(tmp_path)], cwd=REPO,
                                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        running.wait_for("counters ok")
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.terminate()
            try:
                running.proc.wait(10)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()
        reader.join(10)


def table_rows(text: str) -> list[list[str]]:
    """The cells of each row of the tables rich printed (box-drawing or ASCII borders)."""
    return [cells for line in text.splitlines()
            if len(cells := [c.strip() for c in re.split(r"[│┃|]", line)[1:-1]]) > 1]


def test_status_and_top_show_the_running_system(pingpong: Running) -> None:
    pds = pingpong.status()
    assert set(pds) == {"ping", "pong"}
    assert all(state == "running" and pid.isdigit() for state, pid in pds.values()), pds
    run = pingpong.sddf("top", "--once")
    assert run.returncode == 0, run.stderr
    rows = table_rows(run.stdout)
    for name, (_, pid) in pds.items():
        [row] = [row for row in rows if row[:3] == [name, "running", pid]]
        wakeups, idle = int(row[5]), int(row[6])  # pingpong bounces all the time: its wake-ups find work
        assert wakeups > 0 and 0 <= idle < wakeups, run.stdout
    for label in ("ping<->pong free", "ping<->pong active"):
        [(used, capacity)] = [(row[1], row[2]) for row in rows if row[0] == label]
        assert capacity == "64" and 0 <= int(used) <= 64, run.stdout


def test_restart_replaces_the_process_and_traffic_resumes(pingpong: Running) -> None:
    before = pingpong.status()
    run = pingpong.sddf("restart", "pong")
    assert run.returncode == 0, run.stderr
    after = pingpong.status()
    assert after["pong"][0] == "running" and after["pong"][1] != before["pong"][1]
    assert after["ping"] == before["ping"]
    pingpong.wait_for("PD pong: restarted by request")
    pingpong.wait_for("counters ok")  # written after the restart: the merged pipe keeps write order
    assert "faulted" not in pingpong.output()


def test_swap_to_another_kind_is_refused(pingpong: Running) -> None:
    before = pingpong.status()
    run = pingpong.sddf("swap", "pong", "sddf.apps.timer_client:TimerClient")
    assert run.returncode != 0
    assert "kinds differ" in run.stderr
    assert pingpong.status() == before


def test_stop_ends_the_run_cleanly(pingpong: Running) -> None:
    run = pingpong.sddf("stop")
    assert run.returncode == 0, run.stderr
    assert pingpong.proc.wait(10) == 0
    assert "faulted" not in pingpong.rest()
    assert not list(pingpong.run_dir.iterdir()), "the control socket was left behind"


def test_run_refuses_a_poll_outside_its_range_and_runs_with_one() -> None:
    refused = sddf("run", "pingpong", "--poll-us", "-5")
    assert refused.returncode == 2 and "--poll-us -5" in refused.stderr
    polled = sddf("run", "pingpong", "--poll-us", "100", "--duration", "2")
    assert polled.returncode == 0, polled.stderr
    assert "pong" in polled.stdout + polled.stderr
