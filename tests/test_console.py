"""The serial console of ``sddf run``: the terminal is raw while it runs and given back however it ends.

The system run here (``system()`` below: ``sddf run`` takes this file) is the pty serial driver on
``serial:console`` and an echo client that answers each input with ``<input>``. pexpect gives the
monitor a pty as its terminal; the test watches that pty's termios through its slave.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import pexpect
import psutil
import pytest

from helpers.sddf_cli import REPO, SDDF
from sddf import console
from sddf.component import Component
from sddf.devices import open_device
from sddf.serial.config import SerialClientConfig, SerialDriverConfig, SerialQueue
from sddf.testing import Bench
from sddf.system import Channel, Irq, Map, MemoryRegion, ProtectionDomain, SystemDescription

TIOCGPTN = 0x80045430
QUEUE_SIZE = 0x1000
DEADLINE_S = 15.0
COOKED = termios.ICANON | termios.ECHO


# ---- the system `sddf run` runs ----------------------------------------------------------
class Echo(Component):
    """Answers each input with ``<input>`` (a stand-in for the serial virtualisers and a client)."""

    kind = "test.serial_echo"
    Config = SerialClientConfig

    def init(self) -> None:
        self.tx = self.config.tx.producer("echo:tx", self.regions)
        self.rx = self.config.rx.consumer("echo:rx", self.regions)

    def notified(self, ch: int) -> None:
        if ch == self.config.rx.channel and (data := self.rx.dequeue()):
            self.tx.enqueue(b"<" + data + b">")
            self.notify(self.config.tx.channel)


def _queue(sdf: SystemDescription, label: str, producer: ProtectionDomain,
           consumer: ProtectionDomain) -> tuple[SerialQueue, SerialQueue]:
    header = sdf.add_mr(MemoryRegion(f"{label}_queue", QUEUE_SIZE))
    data = sdf.add_mr(MemoryRegion(f"{label}_data", QUEUE_SIZE))
    for pd in (producer, consumer):
        pd.add_map(Map(header, "rw"))
        pd.add_map(Map(data, "rw"))
    ch = sdf.add_channel(Channel(producer, consumer))
    return (SerialQueue(header.name, data.name, QUEUE_SIZE, ch.pd_a_id),
            SerialQueue(header.name, data.name, QUEUE_SIZE, ch.pd_b_id))


def system() -> SystemDescription:
    sdf = SystemDescription("console_test")
    uart = sdf.add_pd(ProtectionDomain("uart", "sddf.drivers.serial.pty:PtySerialDriver", priority=200))
    echo = sdf.add_pd(ProtectionDomain("echo", "test_console:Echo", priority=100))
    echo_tx, uart_tx = _queue(sdf, "tx", echo, uart)
    uart_rx, echo_rx = _queue(sdf, "rx", uart, echo)
    irq = sdf.add_irq(Irq(uart, "serial:console"))
    uart.config.update(asdict(SerialDriverConfig(irq.id, uart_tx, uart_rx)))
    echo.config.update(asdict(SerialClientConfig(echo_tx, echo_rx)))
    return sdf


# ---- helpers -------------------------------------------------------------------------------
def wait_for(done: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def lflag(fd: int) -> int:
    return termios.tcgetattr(fd)[3]


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[pexpect.spawn, int]]:
    """``sddf run`` of this file on a pty (its terminal), and the test's own fd on that pty's slave."""
    child = pexpect.spawn(SDDF, ["run", "--run-dir", str(tmp_path), __file__], cwd=str(REPO),
                          timeout=DEADLINE_S, env={**os.environ, "SDDF_RUN_DIR": str(tmp_path)})
    number = struct.unpack("I", fcntl.ioctl(child.child_fd, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    try:
        yield child, slave
    finally:
        child.close(force=True)
        os.close(slave)


def test_console_is_raw_while_running_and_restored_after_sigkill_of_the_monitor(
        monitor: tuple[pexpect.spawn, int]) -> None:
    child, slave = monitor
    assert lflag(slave) & COOKED == COOKED
    child.expect("running system 'console_test'")
    wait_for(lambda: not lflag(slave) & COOKED, "raw mode")
    assert lflag(slave) & termios.ISIG  # Ctrl-C still stops `sddf run`
    assert termios.tcgetattr(slave)[6][termios.VQUIT] == b"\0"  # Ctrl-\ is virt_rx's, not SIGQUIT
    child.send("hi")
    child.expect_exact("<hi>")  # typed bytes reach the driver and its output reaches the terminal
    assert b"hi" not in child.before  # no local echo
    child.kill(signal.SIGKILL)
    wait_for(lambda: lflag(slave) & COOKED == COOKED, "the terminal restored after SIGKILL", 5.0)


def test_ctrl_c_stops_the_system_and_the_terminal_is_restored(
        monitor: tuple[pexpect.spawn, int]) -> None:
    child, slave = monitor
    child.expect("running system 'console_test'")
    wait_for(lambda: not lflag(slave) & COOKED, "raw mode")
    child.sendcontrol("c")
    child.expect_exact("got SIGINT; stopping")
    wait_for(lambda: not child.isalive(), "the monitor to exit", 5.0)  # (no EOF: the test holds the slave)
    assert child.exitstatus == 0
    assert lflag(slave) & COOKED == COOKED


# ---- the guard and the openers, in this process --------------------------------------------
@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def test_the_guardian_restores_when_the_monitor_end_closes_and_holds_nothing_else(
        pty_pair: tuple[int, int]) -> None:
    _master, slave = pty_pair
    guard = console.TerminalGuard(slave)
    termios.tcsetattr(slave, termios.TCSANOW, console.raw_mode(guard.saved))
    pid = guard.guardian.pid
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert (fds.pop(0), fds.pop(2)) == ("/dev/null", "/dev/null")
    assert sorted(target.split(":")[0] for target in fds.values()) == [os.ttyname(slave), "pipe"]
    guard.guardian.send_signal(signal.SIGTERM)  # ignored: only the pipe's end lets it go
    guard.guardian.send_signal(signal.SIGHUP)
    time.sleep(0.1)
    assert guard.guardian.poll() is None
    os.close(guard._alive)  # what the monitor's death does
    assert guard.guardian.wait(5) == 0
    assert termios.tcgetattr(slave) == guard.saved


def test_a_tty_device_is_raw_until_released(pty_pair: tuple[int, int]) -> None:
    _master, slave = pty_pair
    before = termios.tcgetattr(slave)
    fd = open_device(f"serial:tty={os.ttyname(slave)}")
    try:
        assert not lflag(slave) & COOKED
        assert not os.get_blocking(fd)
    finally:
        console.release(fd)
        os.close(fd)
    assert termios.tcgetattr(slave) == before


def test_closing_the_monitor_restores_its_terminals_at_once(pty_pair: tuple[int, int]) -> None:
    """Not left to the guardian: the monitor gives the terminal back as it closes."""
    _master, slave = pty_pair
    before = termios.tcgetattr(slave)
    sdf = system()
    sdf.irqs[0].source = f"serial:tty={os.ttyname(slave)}"
    bench = Bench(sdf)
    bench.start()
    assert not lflag(slave) & COOKED
    guardians = [p for p in psutil.Process().children() if "-c" in p.cmdline()]
    bench.close()
    assert termios.tcgetattr(slave) == before
    assert guardians and not any(p.is_running() for p in guardians)


def test_a_new_pty_is_printed_and_its_slave_kept_open(capfd: pytest.CaptureFixture[str]) -> None:
    fd = open_device("serial:pty")
    try:
        said = capfd.readouterr().err
        path = said.split("picocom ", 1)[1].split()[0]
        assert f"screen {path}\n" in said
        with pytest.raises(BlockingIOError):  # not EIO: the monitor holds the slave
            os.read(fd, 1)
        peer = os.open(path, os.O_RDWR | os.O_NOCTTY)
        os.write(peer, b"\n")
        wait_for(lambda: bool(select.select([fd], [], [], 0)[0]), "the byte typed on the slave")
        assert os.read(fd, 10) == b"\n"  # raw: no ICRNL, no echo of our own output
        os.close(peer)
    finally:
        console.release(fd)
    with pytest.raises(OSError) as closed:  # the slave is closed now: the master reads EIO
        os.read(fd, 1)
    assert closed.value.errno == errno.EIO
    os.close(fd)



def _pty_with_output(capfd: pytest.CaptureFixture[str]) -> tuple[int, str, bytes]:
    """A serial:pty device with as much written to it as it takes (up to 16 KiB): fd, slave path, bytes."""
    fd = open_device("serial:pty")
    path = capfd.readouterr().err.split("picocom ", 1)[1].split()[0]
    data, written = bytes(range(256)) * 64, 0
    while written < len(data):
        try:
            written += os.write(fd, data[written:])
        except BlockingIOError:
            break
    assert written >= 4096
    return fd, path, data[:written]


def test_releasing_a_pty_lets_a_slow_reader_take_what_was_written(capfd: pytest.CaptureFixture[str]) -> None:
    fd, path, written = _pty_with_output(capfd)
    reader = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    got = bytearray()

    def read_slowly() -> None:
        while True:
            try:
                chunk = os.read(reader, 512)
            except OSError:  # EIO: hung up
                return
            if not chunk:
                return
            got.extend(chunk)
            time.sleep(0.005)
    thread = threading.Thread(target=read_slowly)
    thread.start()
    console.release(fd)
    os.close(fd)  # the hang-up: what the reader had not taken by now would be dropped
    thread.join(5)
    os.close(reader)
    assert bytes(got) == written


def test_releasing_a_pty_nobody_reads_does_not_wait_for_a_reader(capfd: pytest.CaptureFixture[str]) -> None:
    fd, _path, _written = _pty_with_output(capfd)
    start = time.monotonic()
    console.release(fd)
    os.close(fd)
    assert time.monotonic() - start < console.PTY_DRAIN_S
