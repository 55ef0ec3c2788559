"""`sddf run serial` on a terminal (pexpect gives it one): two shells sharing the console; on a new
pty with picocom attached, as the README says; and with no terminal, the console is `sddf run`'s
stdout and stdin."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pexpect
import pytest

from helpers.sddf_cli import SDDF

COLOUR = rb"\x1b\[(3\dm)"


@pytest.fixture
def console(tmp_path: Path):
    child = pexpect.spawn(SDDF, ["run", "serial", "--run-dir", str(tmp_path)], timeout=20)
    try:
        child.expect(b"Begin input")
        child.expect(b"shell1: pysddf shell")
        yield child
    finally:
        if child.isalive():
            child.sendcontrol("c")
            child.expect(pexpect.EOF)
        child.close()


def _reply(child: pexpect.spawn, keys: bytes, pattern: bytes) -> bytes:
    """Type ``keys``; the colour code in front of the output that matches ``pattern``."""
    child.send(keys)
    child.expect(COLOUR + rb"[^\x1b]*" + pattern)
    return child.match.group(1)


def test_keys_reach_the_current_shell_and_each_answers_in_its_colour(console: pexpect.spawn) -> None:
    zero = _reply(console, b"echo hello zero\r", b"hello zero")
    console.send(b"\x1c1\r")
    one = _reply(console, b"clients\r", rb"1: shell1 \(me\)")
    assert zero != one
    console.send(b"\x1c0\r")
    assert _reply(console, b"clients\r", rb"0: shell0 \(me\)") == zero


def test_an_invalid_switch_sequence_is_ignored_with_a_message(console: pexpect.spawn) -> None:
    console.send(b"\x1cx")
    console.expect(b"serial_virt_rx: refused: character b'x' after the switch character")
    console.send(b"uptime\r")
    console.expect(rb"up \d+\.\d{3} s")  # still shell0, still answering


def test_without_a_terminal_the_console_is_stdout_and_piped_keys_type_into_it(tmp_path: Path) -> None:
    keys = b"echo piped zero\r\x1c1\rclients\r"
    done = subprocess.run([SDDF, "run", "serial", "--run-dir", str(tmp_path), "--duration", "4"], input=keys,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = re.sub(rb"\x1b\[[0-9;]*m", b"", done.stdout)
    assert b"'shell1' is client 1\r\n" in out
    assert b"\r\npiped zero\r\n" in out  # shell0 ran the first line
    assert b"1: shell1 (me)" in out  # after the switch, shell1 answered


@pytest.mark.skipif(shutil.which("picocom") is None, reason="picocom is not installed (.ci/run installs it)")
def test_picocom_attached_to_the_pty_backend_is_a_working_console(tmp_path: Path) -> None:
    monitor = pexpect.spawn(SDDF, ["run", "serial", "--run-dir", str(tmp_path)], timeout=20,
                            env={**os.environ, "SDDF_SERIAL_DEVICE": "serial:pty"})
    try:
        monitor.expect(rb"picocom (/dev/pts/\d+)")
        picocom = pexpect.spawn("picocom", ["-q", monitor.match.group(1).decode()], timeout=20)
        try:
            picocom.expect(b"shell1: pysddf shell")  # written before it attached: held for it
            assert _reply(picocom, b"echo via picocom\r", b"via picocom\r\n") == b"31m"
            picocom.send(b"\x1c1\r")
            assert _reply(picocom, b"clients\r", rb"1: shell1 \(me\)") == b"32m"
            picocom.sendcontrol("a")
            picocom.sendcontrol("x")  # picocom's exit: the system runs on
            picocom.expect(pexpect.EOF)
        finally:
            picocom.close(force=True)
        assert monitor.isalive()
        monitor.sendcontrol("c")
        monitor.expect(pexpect.EOF)
    finally:
        monitor.close(force=True)
