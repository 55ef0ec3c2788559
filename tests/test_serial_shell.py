"""The shell on the bundled serial system (apps/systems/serial.py), its driver played by the test.

Real virt_tx, virt_rx, timer and two shells on the test bench; the test types into the driver's
rx queue and reads what virt_tx puts on the driver's tx queue.
"""
from __future__ import annotations

import re
from typing import Iterator

import pytest

from sddf.apps.systems.serial import system
from sddf.config import typed
from sddf.serial.config import SerialDriverConfig
from sddf.testing import Bench
from serial_helpers import STUB

ANSI = re.compile(rb"\x1b\[[0-9;]*m")


class Console:
    """The terminal's side of the driver: type keys, read the screen (colour codes kept or not)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        cfg = typed(SerialDriverConfig, bench.sdf.pd("uart").config, "uart")
        regions = bench.component("uart").regions
        self.screen = cfg.tx.consumer("screen", regions)
        self.keys = cfg.rx.producer("keys", regions)
        self.keys_channel = cfg.rx.channel
        self.seen = b""

    def type(self, keys: bytes) -> bytes:
        """Type ``keys``; what the screen shows after (colour codes stripped)."""
        assert self.keys.enqueue(keys) == len(keys)
        self.bench.component("uart").notify(self.keys_channel)
        return self.read()

    def read(self, raw: bool = False) -> bytes:
        self.bench.run()
        got = self.screen.dequeue()
        self.seen += got
        return got if raw else ANSI.sub(b"", got)


@pytest.fixture
def console() -> Iterator[Console]:
    sdf = system(device="timerfd")  # a stand-in device: the test plays the driver
    sdf.pd("uart").program = STUB
    with Bench(sdf) as bench:
        bench.start()
        c = Console(bench)
        c.read()
        yield c


def test_both_shells_greet_and_input_goes_to_client_0_first(console: Console) -> None:
    screen = ANSI.sub(b"", console.seen)
    assert b"Begin input" in screen
    assert b"'shell0' is client 0" in screen and b"'shell1' is client 1" in screen
    assert b"shell0: pysddf shell" in screen and b"shell1: pysddf shell" in screen
    assert console.type(b"echo hi there\r") == b"echo hi there\r\nhi there\r\n$ "


def test_switching_sends_keys_to_the_other_shell_in_its_colour(console: Console) -> None:
    console.type(b"\x1c1\r")
    console.keys.enqueue(b"clients\r")
    console.bench.component("uart").notify(console.keys_channel)
    out = console.read(raw=True)
    assert b"1: shell1 (me)" in out
    colours = set(re.findall(rb"\x1b\[3[0-9]m", out))
    assert len(colours) == 1  # one shell's batch, in one colour
    console.type(b"\x1c0\r")
    assert b"0: shell0 (me)" in console.type(b"clients\r")


def test_the_line_editor_erases_and_the_commands_answer(console: Console) -> None:
    assert console.type(b"ecx\x7fho x\r").endswith(b"x\r\n$ ")
    assert b"unknown command" in console.type(b"frobnicate\r")
    assert re.search(rb"up \d+\.\d{3} s", console.type(b"uptime\r"))
    assert b"commands: clients counters echo help uptime" in console.type(b"help\r")
    assert re.search(rb"rx_bytes=\d+ tx_bytes=\d+", console.type(b"counters\r"))
    assert console.type(b"echo a\r\n") == b"echo a\r\na\r\n$ "  # \r\n is one Enter
