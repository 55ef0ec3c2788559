"""A serial client's log lines go through its console (virt_tx → driver), as a LionsOS client's printf.

On the bench: lines land on the driver's queue in the client's colour, nothing on stdout; a full
queue holds the rest until virt_tx signals room, then sends it in order with nothing dropped; a
PD with no serial grant logs on stdout; a bad grant is a config error. Through processes: at stop
the serial path is stopped last and prints what the stopped PDs had published, however slow stdout is.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from components import importable
from components.logger import line
from helpers.sddf_cli import SDDF
from monitor_fixtures import run_dir  # noqa: F401  (fixture)
from serial_helpers import client_name, serial_rig
from sddf import control
from sddf.control import ControlError
from sddf.system import InvalidSystem, ProtectionDomain, SystemDescription
from virtualisers.serial.tx import COLOUR_END, COLOURS

LOGGER = "components.logger:Logger"
READER_BACK_S = 0.3  # after SIGINT, how long stdout stays unread (the drain allows 1 s)
READ_PAUSE_S = 0.02


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    importable(monkeypatch)


def _expected(client: int, lines: int, width: int) -> list[bytes]:
    return [f"{client_name(client)}: {line(i, width)}\r\n".encode() for i in range(lines)]


def test_log_lines_of_a_serial_client_go_through_virt_tx_in_its_colour(capfd: pytest.CaptureFixture[str]) -> None:
    rig = serial_rig(2, rx=False, client=LOGGER, client_config={"lines": 3})
    rig.bench.run()
    out = rig.output()
    for client in (0, 1):
        batch = b"".join(_expected(client, 3, 20))
        assert COLOURS[client] + batch + COLOUR_END in out, out
    assert rig.bench.counters(client_name(0))["tx_bytes"] == len(b"".join(_expected(0, 3, 20)))
    assert "line" not in capfd.readouterr().out  # nothing went around the console


def test_a_full_console_holds_lines_until_virt_tx_makes_room_and_loses_none() -> None:
    lines, width = 200, 60  # ~15 KiB of lines into a 4 KiB queue
    rig = serial_rig(1, rx=False, client=LOGGER, client_config={"lines": lines, "width": width})
    rig.bench.run()
    out = bytearray()
    for _ in range(100):
        taken = rig.output()
        if not taken:
            break
        out += taken
        rig.bench.component("uart").notify(rig.driver.tx_channel)  # the driver made room: virt_tx goes on
        rig.bench.run()
    text = re.sub(rb"\x1b\[[0-9;]*m", b"", bytes(out))
    assert text.endswith(b"".join(_expected(0, lines, width))), text[-200:]
    counters = rig.bench.counters(client_name(0))
    assert counters["console_room"] >= 2  # held lines went on when virt_tx signalled, more than once
    assert counters["tx_dropped"] == 0


def test_a_pd_without_a_serial_grant_logs_on_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    rig = serial_rig(1, rx=False)
    rig.bench.component("serial_virt_tx").log("said directly")
    assert capfd.readouterr().out == "serial_virt_tx: said directly\n"


def test_a_malformed_serial_grant_is_refused_naming_the_pd() -> None:
    sdf = SystemDescription("bad_grant")
    pd = sdf.add_pd(ProtectionDomain("logger", LOGGER, priority=100))
    pd.config["serial"] = {"tx": 5}
    with pytest.raises(InvalidSystem, match=r"PD 'logger'.*serial"):
        sdf.check()


SYSTEM = '''\
from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription


def system() -> SystemDescription:
    sdf = SystemDescription("log_drain")
    uart = sdf.add_pd(ProtectionDomain("uart", "sddf.drivers.serial.pty:PtySerialDriver", priority=200))
    virt_tx = sdf.add_pd(ProtectionDomain("serial_virt_tx", "sddf.virtualisers.serial.tx:SerialVirtTx", priority=150))
    serial = Sddf.Serial(sdf, uart, virt_tx, enable_color=False)  # the device: sddf run's stdout
    logger = sdf.add_pd(ProtectionDomain("logger", "components.logger:Logger", priority=100))
    logger.config.update(lines={lines}, width={width})
    serial.add_client(logger)
    serial.connect()
    return sdf
'''


def test_at_stop_the_serial_path_prints_everything_the_stopped_pds_had_published(run_dir: Path) -> None:  # noqa: F811
    """Nobody reads ``sddf run``'s stdout until after SIGINT, so the logger's lines back up through
    the pipe, the relay, the driver and the queues (the logger's own backlog holds the rest).
    Everything it had published must come out, in order: the serial path is stopped last, once
    it has printed the queues, and a slow stdout loses nothing."""
    lines, width = 8000, 100  # ~850 KiB: more than the pipe, socket and queues hold
    path = run_dir / "log_drain.py"
    path.write_text(SYSTEM.format(lines=lines, width=width))
    with (run_dir / "stderr").open("w") as stderr:
        monitor = subprocess.Popen([SDDF, "run", str(path), "--run-dir", str(run_dir)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=stderr)
    try:
        published = _published_once_stuck(run_dir)
        monitor.send_signal(signal.SIGINT)
        time.sleep(READER_BACK_S)  # the reader comes back a moment later, and reads slowly
        out = _read_slowly(monitor)
        monitor.wait(10)
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.communicate()
    assert monitor.returncode == 0, (run_dir / "stderr").read_text()
    printed = out.split(b"'logger' is client 0\r\n", 1)[1]
    assert _expected_text(lines, width).startswith(printed), printed[-300:]
    assert len(printed) >= published > 300 * 1024


def _read_slowly(monitor: subprocess.Popen[bytes]) -> bytes:
    """All of ``monitor``'s stdout, 64 KiB at a time with a pause after each (a slow terminal)."""
    assert monitor.stdout is not None
    out = bytearray()
    while chunk := monitor.stdout.read1(65536):
        out += chunk
        time.sleep(READ_PAUSE_S)
    return bytes(out)


def _expected_text(lines: int, width: int) -> bytes:
    return b"".join(f"logger: {line(i, width)}\r\n".encode() for i in range(lines))


def _published_once_stuck(run_dir: Path) -> int:
    """The logger's published bytes (its tx_bytes) once they stop growing: the path is full."""
    deadline, last, counters = time.monotonic() + 20, -1, {}
    while time.monotonic() < deadline:
        time.sleep(0.3)
        with contextlib.suppress(ControlError):  # the monitor opens its devices before it listens
            reply, fds = control.request(str(run_dir), "log_drain", {"cmd": "counters", "fresh": True})
            counters = reply["counters"]
            for fd in fds:
                os.close(fd)
        published = counters.get("logger", {}).get("tx_bytes", 0)
        if published and published == last:
            return published
        last = published
    raise AssertionError(f"the logger's output never backed up: {counters}")
