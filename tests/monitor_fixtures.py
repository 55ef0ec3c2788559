"""Shared helpers for the monitor tests: run a system under ``sddf run`` and watch what it says.

A test writes a small system file (:func:`write_system`), starts it with the ``systems``
fixture, and gets a :class:`SystemRun`: the monitor's stdout and stderr (and its PDs', which
inherit them) are read by a thread that stamps every line with its arrival time, so a test
can block on a line with a deadline and measure how long after an event it came. Each test
runs in its own run directory (its tmp_path), passed explicitly to the monitor and to control
requests; ``SDDF_RUN_DIR`` set to the same only tags the processes a run starts (they inherit it).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import psutil
import pytest

from components import importable
from helpers.sddf_cli import SDDF
from sddf import control

DEADLINE_S = 15.0  # for lines that must come: generous, the machine is shared
TICK = re.compile(r"^\w+: tick \d+$")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # a serial console's colours (virt_tx), dropped as a reader sees past them
STOP_WAIT_S = 3.0  # at teardown, for a monitor to obey SIGTERM before it is killed

SYSTEM_TEMPLATE = '''\
from sddf.shm import PAGE_SIZE
from sddf.system import Channel, Map, MemoryRegion, SystemDescription
from components.build import add_faulty, add_pingpong, add_ticker


def system() -> SystemDescription:
    sdf = SystemDescription({name!r})
{body}
    return sdf
'''


def write_system(directory: Path, name: str, body: str) -> Path:
    """A system file named ``name``: ``body`` builds ``sdf`` with sddf.system and components.build."""
    path = directory / f"{name}.py"
    path.write_text(SYSTEM_TEMPLATE.format(name=name, body=textwrap.indent(textwrap.dedent(body), "    ")))
    return path


@dataclass(frozen=True)
class Line:
    """One output line, where it came in the output, and when the test read it (time.monotonic)."""

    index: int
    at: float
    text: str
    match: re.Match[str] | None = None


def _summary(lines: list[Line]) -> str:
    ticks = [line for line in lines if TICK.match(line.text)]
    shown = [line.text for line in lines if not TICK.match(line.text)]
    return "\n".join(shown + [f"({len(ticks)} ticker lines not shown)"] * bool(ticks))


def system_pids(run_dir: Path) -> list[int]:
    """Processes alive that a system run in ``run_dir`` started (its PDs and anything they
    spawned: all inherit SDDF_RUN_DIR), the monitor included while it runs."""
    found = []
    for proc in psutil.process_iter(["environ"]):
        env = proc.info["environ"] or {}
        if env.get("SDDF_RUN_DIR") == str(run_dir) and proc.pid != os.getpid():
            found.append(proc.pid)
    return found


class SystemRun:
    """``sddf run SYSTEM [OPTIONS]`` as a subprocess, its merged output collected line by line with
    arrival times (a serial console's colours left out). ``system`` is a system file or the name
    of a bundled system."""

    def __init__(self, system: Path | str, name: str, run_dir: Path, options: Iterable[str] = ()) -> None:
        self.name = name
        self.run_dir = run_dir
        self.lines: list[Line] = []
        self._done = False
        self._changed = threading.Condition()
        self.proc = subprocess.Popen([SDDF, "run", str(system), "--run-dir", str(run_dir), *options],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            with self._changed:
                self.lines.append(Line(len(self.lines), time.monotonic(), SGR.sub("", text).rstrip("\n")))
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    # ---- output ---------------------------------------------------------------------------
    def output(self) -> str:
        """Everything said so far, for failure messages (the ticker's lines counted, not shown)."""
        with self._changed:
            return _summary(self.lines)

    def matching(self, pattern: str, after: int = 0) -> list[Line]:
        """Every line so far at index >= ``after`` that ``pattern`` matches (re.search)."""
        with self._changed:
            return [line for line in self.lines[after:] if re.search(pattern, line.text)]

    def wait_for(self, pattern: str, after: int = 0, timeout: float = DEADLINE_S) -> Line:
        """Block until a line at index >= ``after`` matches ``pattern``; fail if it never comes."""
        deadline = time.monotonic() + timeout
        seen = after
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = re.search(pattern, line.text)
                    if found:
                        return Line(line.index, line.at, line.text, found)
                seen = max(seen, len(self.lines))
                left = deadline - time.monotonic()
                if self._done or left <= 0:
                    why = "the output ended" if self._done else f"{timeout:.0f} s passed"
                    raise AssertionError(f"{why} without a line matching {pattern!r} after line "
                                         f"{after}; output:\n{_summary(self.lines)}")
                self._changed.wait(left)

    def mark(self) -> int:
        """The index the next line will have (to wait only for what comes after now)."""
        with self._changed:
            return len(self.lines)

    # ---- control --------------------------------------------------------------------------
    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a control request to the monitor; its reply (any fds it sent are closed)."""
        reply, fds = control.request(str(self.run_dir), self.name, request)
        for fd in fds:
            os.close(fd)
        return reply

    def status(self) -> dict[str, dict[str, Any]]:
        """Each PD's status entry by PD name."""
        return {pd["name"]: pd for pd in self.control({"cmd": "status"})["pds"]}

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``sddf COMMAND --system NAME ARGS`` against this system, to completion."""
        return subprocess.run([SDDF, command, "--system", self.name, "--run-dir", str(self.run_dir), *args],
                              capture_output=True, text=True, timeout=DEADLINE_S)

    # ---- ending ---------------------------------------------------------------------------
    def wait(self, timeout: float = DEADLINE_S) -> int:
        """The monitor's exit code, once it exits by itself and its output is read."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def close(self) -> None:
        """Stop the monitor if still running and kill any PD process it left behind."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for pid in system_pids(self.run_dir):  # left by a PD (or the monitor) despite the above
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reader.join(5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def strike(run: SystemRun, pd: str, sig: signal.Signals) -> tuple[int, float, int]:
    """Send ``sig`` to ``pd`` once it has booted; return its pid, when the signal was sent and
    the output mark from before."""
    booted = run.wait_for(rf"^{pd}: boot 1 pid (\d+)$")
    pid = run.status()[pd]["pid"]
    assert pid == int(booted.match[1])
    mark = run.mark()
    sent = time.monotonic()  # the clock Line.at uses
    os.kill(pid, sig)
    return pid, sent, mark


Start = Callable[[str, str], "SystemRun"]  # what the ``systems`` fixture gives: start(name, body)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the run directory (and SDDF_RUN_DIR, which tags the processes a run starts),
    with the test components importable here and in every PD."""
    importable(monkeypatch)
    monkeypatch.setenv("SDDF_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # unbuffered, print() writes a line in two parts
    return tmp_path


@pytest.fixture
def systems(run_dir: Path) -> Iterator[Start]:
    """``start(name, body)``: write a system file and run it; every run is stopped at teardown."""
    runs: list[SystemRun] = []

    def start(name: str, body: str) -> SystemRun:
        runs.append(SystemRun(write_system(run_dir, name, body), name, run_dir))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def leftovers(run: SystemRun, pd_pids: Iterable[int] = ()) -> list[str]:
    """What a stopped system left: processes (its PDs, and ``pd_pids`` seen while it ran),
    its control socket, and named shm regions of the monitor or those PDs."""
    pids = set(pd_pids)
    left = [f"process {pid} still alive" for pid in sorted(pids | set(system_pids(run.run_dir)))
            if _alive(pid)]
    sock = run.run_dir / f"{run.name}.sock"
    if sock.exists():
        left.append(f"control socket {sock} still there")
    for pid in pids | {run.proc.pid}:
        left += [f"{p} still there" for p in Path("/dev/shm").glob(f"sddf-{pid}-*")]
    return left


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
