"""`sddf run serial` on a terminal (pexpect gives it one): two shells sharing the console."""
from __future__ import annotations

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
