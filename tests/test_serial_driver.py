"""The pty serial driver through the test bench: its side of sDDF's serial contract.

The device is a pty made here: the driver gets its slave (``serial:tty=/dev/pts/N``, opened raw
and guarded by the monitor's opener) and the test holds the master, so what the driver writes is
read here and what is written here is what the driver reads, as if typed. The virtualisers'
places are taken by the test: it fills the tx queue as virt_tx and empties the rx queue as
virt_rx, and every notify is recorded by the bench.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from sddf.classes import Sddf
from sddf.serial.queue import SerialConsumer, SerialProducer
from sddf.system import ProtectionDomain, SystemDescription
from sddf.testing import Bench, Notify

IDLE = "components.idle:Idle"  # the places the test plays

DRIVER = "uart"
CAPACITY = 0x1000  # small queues: a full one is easy to reach
SETTLE_S = 5.0


@dataclass
class Rig:
    """The bench, the pty master (the far side of the driver's device) and the virtualisers' ends."""

    bench: Bench
    master: int
    tx: SerialProducer       # virt_tx's end: the driver consumes it
    rx: SerialConsumer       # virt_rx's end: the driver fills it
    tx_channel: int          # virt_tx's channel to the driver
    driver_tx_channel: int   # the driver's channel to virt_tx
    driver_rx_channel: int   # the driver's channel to virt_rx

    def send(self, data: bytes) -> None:
        """As virt_tx: publish ``data`` (it must fit) and notify the driver, then run the bench."""
        assert self.tx.enqueue(data) == len(data)
        self.bench.component("virt_tx").notify(self.tx_channel)
        self.bench.run()

    def until(self, done: Callable[[], bool], what: str) -> None:
        """Run the bench until ``done()`` (the kernel moves pty bytes asynchronously)."""
        deadline = time.monotonic() + SETTLE_S
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.bench.run()
            time.sleep(0.001)

    def read_master(self, count: int) -> bytes:
        """``count`` bytes the driver wrote, running the bench while they come."""
        got = bytearray()

        def have() -> bool:
            try:
                got.extend(os.read(self.master, count - len(got)))
            except BlockingIOError:
                pass
            return len(got) >= count
        self.until(have, f"{count} bytes from the driver (got {len(got)})")
        return bytes(got)

    def notified(self, receiver: str) -> list[Notify]:
        return [n for n in self.bench.notifies if n.sender == DRIVER and n.receiver == receiver]


@pytest.fixture
def rig() -> Iterator[Rig]:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    sdf = SystemDescription("serial_driver_test")
    driver = sdf.add_pd(ProtectionDomain(DRIVER, "sddf.drivers.serial.pty:PtySerialDriver", priority=200))
    virt_tx = sdf.add_pd(ProtectionDomain("virt_tx", IDLE, priority=150))
    virt_rx = sdf.add_pd(ProtectionDomain("virt_rx", IDLE, priority=150))
    serial = Sddf.Serial(sdf, driver, virt_tx, virt_rx, device=f"serial:tty={os.ttyname(slave)}",
                         data_size=CAPACITY)
    serial.connect()
    bench = Bench(sdf)
    os.close(slave)  # the driver's device holds the slave open
    try:
        bench.start()
        tx_q, rx_q = sdf.pd("virt_tx").config["driver"], sdf.pd("virt_rx").config["driver"]
        regions_tx, regions_rx = bench.component("virt_tx").regions, bench.component("virt_rx").regions
        yield Rig(bench, master,
                  SerialProducer("test:tx", regions_tx[tx_q["queue"]], regions_tx[tx_q["data"]], CAPACITY),
                  SerialConsumer("test:rx", regions_rx[rx_q["queue"]], regions_rx[rx_q["data"]], CAPACITY),
                  tx_q["channel"], driver.config["tx"]["channel"], driver.config["rx"]["channel"])
    finally:
        bench.close()
        os.close(master)


def pattern(size: int) -> bytes:
    """``size`` bytes in which any reordering, loss or duplication shows."""
    return b"".join(i.to_bytes(4, "little") for i in range(size // 4 + 1))[:size]


def test_tx_bytes_reach_the_device_in_order(rig: Rig) -> None:
    rig.send(b"hello, ")
    rig.send(b"world\n")
    assert rig.read_master(13) == b"hello, world\n"
    assert rig.bench.counters(DRIVER)["tx_bytes"] == 13


def test_a_1mb_burst_against_a_slow_reader_arrives_whole_and_in_order(rig: Rig) -> None:
    """virt_tx writes while the queue has room and, when it is full, asks for a signal and waits
    for it; the reader takes 1000 bytes at a time. The driver meets a full pty (partial writes,
    EAGAIN) and must neither lose nor reorder nor spin."""
    data, sent, received = pattern(1 << 20), 0, bytearray()
    signals = 0
    virt_tx = rig.bench.component("virt_tx")
    while len(received) < len(data):
        if sent < len(data):
            sent += rig.tx.enqueue(data[sent:sent + CAPACITY])
            virt_tx.notify(rig.tx_channel)
            if sent < len(data) and rig.tx.full():
                assert not rig.tx.request_and_recheck()  # nothing drains it while the bench is stopped
        before = len(rig.notified("virt_tx"))
        rig.bench.run()
        if len(rig.notified("virt_tx")) > before:
            signals += 1
            assert not rig.tx.signal_requested()  # the driver claimed the request it answered
        if rig.bench.step() != 0:
            pytest.fail("the driver is busy while the device stays full (polling)")
        try:
            received += os.read(rig.master, 1000)
        except BlockingIOError:
            time.sleep(0.0005)
    assert bytes(received) == data
    counters = rig.bench.counters(DRIVER)
    assert counters["tx_bytes"] == len(data)
    assert counters["tx_device_full"] > 0, "the pty never pushed back: the test proves nothing"
    assert signals > 0


def test_typed_bytes_land_in_the_rx_queue_and_virt_rx_is_notified(rig: Rig) -> None:
    os.write(rig.master, b"ls -l\r")
    got = bytearray()

    def have() -> bool:
        got.extend(rig.rx.dequeue())
        return len(got) >= 6
    rig.until(have, "typed bytes in the rx queue")
    assert bytes(got) == b"ls -l\r"
    assert rig.notified("virt_rx"), "the driver published input without notifying virt_rx"


def test_input_that_does_not_fit_is_dropped_and_counted(rig: Rig) -> None:
    typed = pattern(CAPACITY + 1500)
    for at in range(0, len(typed), 500):
        os.write(rig.master, typed[at:at + 500])
    counters = rig.bench.counters(DRIVER)
    rig.until(lambda: counters["rx_bytes"] + counters["rx_dropped"] >= len(typed), "all input read")
    assert counters["rx_bytes"] == CAPACITY
    assert counters["rx_dropped"] == len(typed) - CAPACITY
    assert rig.rx.dequeue() == typed[:CAPACITY]


def test_a_full_tx_queue_producer_that_asked_is_notified_when_room_is_made(rig: Rig) -> None:
    rig.tx.enqueue(b"x" * CAPACITY)
    assert not rig.tx.request_and_recheck()  # full: virt_tx asks to be told of room
    rig.bench.component("virt_tx").notify(rig.tx_channel)
    rig.bench.run()
    assert rig.notified("virt_tx") == [Notify(DRIVER, rig.driver_tx_channel, "virt_tx")]
    assert not rig.tx.signal_requested()
    assert rig.tx.free_slots() > 0
    assert rig.read_master(CAPACITY) == b"x" * CAPACITY


def test_a_producer_that_did_not_ask_is_not_notified(rig: Rig) -> None:
    rig.tx.cancel_signal()  # a zeroed flag reads as a request
    rig.send(b"x" * CAPACITY)
    assert rig.read_master(CAPACITY) == b"x" * CAPACITY
    assert rig.notified("virt_tx") == []


def test_the_driver_sleeps_when_idle(rig: Rig) -> None:
    rig.send(b"idle?\n")
    rig.read_master(6)
    rig.bench.run()
    assert rig.bench.step() == 0  # no irq fires for a writable device with nothing to write


def test_a_restarted_driver_writes_what_its_predecessor_copied_but_had_not_written(rig: Rig) -> None:
    """Fill the pty until the driver holds output it cannot write, kill it, restart it: every byte
    still arrives, once, in order (it releases from the queue only what the device took)."""
    data, sent = pattern(64 * 1024), 0
    virt_tx = rig.bench.component("virt_tx")
    while sent < len(data) and not rig.bench.counters(DRIVER)["tx_device_full"]:
        sent += rig.tx.enqueue(data[sent:sent + CAPACITY])
        virt_tx.notify(rig.tx_channel)
        rig.bench.run()
    assert rig.bench.counters(DRIVER)["tx_device_full"], "the pty never filled: the test proves nothing"
    assert rig.bench.component(DRIVER).pending  # copied, not written
    rig.bench.kill(DRIVER)
    rig.bench.restart(DRIVER)
    received = bytearray()
    while len(received) < len(data):
        if sent < len(data):
            sent += rig.tx.enqueue(data[sent:sent + CAPACITY])
            virt_tx.notify(rig.tx_channel)
        received += rig.read_master(min(1000, sent - len(received)))
    assert bytes(received) == data
