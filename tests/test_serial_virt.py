"""sDDF's serial virtualisers (virt_tx, virt_rx) on the test bench, the driver and clients played
by the test (:mod:`serial_helpers`)."""
from __future__ import annotations

import struct
from typing import Iterator

import pytest

from serial_helpers import DRIVER, VIRT_RX, VIRT_TX, SerialRig, client_name, serial_rig
from sddf.serial.config import BEGIN_STR

RED, GREEN, YELLOW, END = b"\x1b[31m", b"\x1b[32m", b"\x1b[33m", b"\x1b[0m"
SIZE = 0x1000  # every queue's capacity in these systems


@pytest.fixture
def rig() -> Iterator[SerialRig]:
    r = serial_rig(3, data_size=SIZE)
    r.bench.run()
    r.output()  # the banner
    yield r
    r.bench.close()


def test_banner_begin_string_and_colours() -> None:
    r = serial_rig(3, data_size=SIZE)
    try:
        r.bench.run()
        assert r.output() == (BEGIN_STR.encode() + RED + b"'client0' is client 0" + END + b"\r\n"
                              + GREEN + b"'client1' is client 1" + END + b"\r\n"
                              + YELLOW + b"'client2' is client 2" + END + b"\r\n")
        r.write(1, b"hello\r\n")
        r.bench.run()
        assert r.output() == GREEN + b"hello\r\n" + END
    finally:
        r.bench.close()


def test_no_colour_and_no_input_plain_banner() -> None:
    r = serial_rig(2, rx=False, color=False, data_size=SIZE)
    try:
        r.bench.run()
        assert r.output() == b"'client0' is client 0\r\n'client1' is client 1\r\n"
        r.write(0, b"plain")
        r.bench.run()
        assert r.output() == b"plain"
    finally:
        r.bench.close()


def test_colours_are_reused_after_six_clients() -> None:
    r = serial_rig(7, rx=False, data_size=SIZE)
    try:
        r.bench.run()
        banner = r.output()
        assert RED + b"'client6' is client 6" + END in banner
        assert b"\x1b[36m'client5' is client 5" in banner
    finally:
        r.bench.close()


def _room_signal(r: SerialRig) -> None:
    """The driver takes everything, and signals virt_tx if it asked (as a consumer must)."""
    if r.driver.tx.signal_needed():
        r.bench.component(DRIVER).notify(r.driver.tx_channel)
    r.bench.run()


def test_waiting_clients_are_served_whole_in_arrival_order(rig: SerialRig) -> None:
    rig.write(0, b"a" * 4000)
    rig.bench.run()
    first = rig.output()
    assert first == RED + b"a" * 4000 + END
    rig.write(0, b"f" * 4000)  # fills the driver's queue nearly
    rig.bench.run()
    assert rig.driver.tx.length() == 4009
    for client, text in ((2, b"x" * 100), (0, b"y" * 100), (1, b"z" * 100), (2, b"w" * 50)):
        rig.write(client, text)
        rig.bench.run()
    assert rig.driver.tx.length() == 4009, "a batch that does not fit moved"
    assert rig.driver.tx.signal_requested(), "virt_tx must ask the driver to signal when it makes room"
    assert rig.output() == RED + b"f" * 4000 + END
    _room_signal(rig)
    assert rig.output() == (YELLOW + b"x" * 100 + b"w" * 50 + END + RED + b"y" * 100 + END
                            + GREEN + b"z" * 100 + END)


def test_a_waiting_batch_that_still_does_not_fit_keeps_its_place(rig: SerialRig) -> None:
    rig.write(0, b"a" * 4000)
    rig.bench.run()
    rig.write(1, b"b" * 3000)  # waits
    rig.write(2, b"c" * 200)   # waits behind it
    rig.bench.run()
    rig.driver.tx.dequeue(2900)  # room for client2's batch but not client1's
    _room_signal(rig)
    rest = rig.output()
    assert rest.endswith(YELLOW + b"c" * 200 + END) and GREEN not in rest
    _room_signal(rig)
    assert rig.output() == GREEN + b"b" * 3000 + END


def test_a_waiting_client_does_not_overtake_on_its_own_notification(rig: SerialRig) -> None:
    rig.write(0, b"a" * 4000)
    rig.bench.run()
    rig.write(2, b"x" * 100)
    rig.write(1, b"y" * 100)
    rig.bench.run()
    rig.output()  # the driver made room but has not signalled yet
    rig.write(1, b"more")
    rig.bench.run()
    assert rig.output() == b"", "client1 went ahead of client2, which waited first"
    _room_signal(rig)
    assert rig.output() == YELLOW + b"x" * 100 + END + GREEN + b"y" * 100 + b"more" + END


def test_a_full_client_queue_moves_in_batches_the_driver_can_hold(rig: SerialRig) -> None:
    rig.write(0, b"q" * SIZE)
    rig.bench.run()
    out = rig.output()
    assert out == RED + b"q" * (SIZE - 9) + END
    _room_signal(rig)
    assert rig.output() == RED + b"q" * 9 + END


def test_switch_char_twice_passes_it_through(rig: SerialRig) -> None:
    rig.type(b"ab\x1c\x1ccd")
    assert rig.received(0) == b"ab\x1ccd"
    assert rig.received(1) == b""


def test_switching_to_client_1(rig: SerialRig) -> None:
    rig.type(b"to0\x1c1\rto1")
    assert rig.received(0) == b"to0"
    assert rig.received(1) == b"to1"
    rig.type(b"\x1c0002\rto2")
    assert rig.received(2) == b"to2"
    assert rig.bench.counters(VIRT_RX)["switches"] == 2


@pytest.mark.parametrize("sequence, counter", [
    (b"\x1cz", "rx.invalid_switch"),
    (b"\x1c12345", "rx.invalid_number"),
    (b"\x1c1x", "rx.invalid_number"),
    (b"\x1c3\r", "rx.invalid_client"),
    (b"\x1c9999\r", "rx.invalid_client"),
])
def test_invalid_switch_sequences_are_ignored_and_counted(rig: SerialRig, sequence: bytes, counter: str) -> None:
    rig.type(b"a" + sequence + b"b")
    rig.type(b"a" + sequence + b"b")
    assert rig.received(0) == b"abab"
    counters = rig.bench.counters(VIRT_RX)
    assert counters[counter] == 2
    assert counters["switches"] == 0


def test_invalid_sequence_leaves_input_with_the_current_client(rig: SerialRig) -> None:
    rig.type(b"\x1c1\r")
    rig.type(b"a\x1c7\rb\x1czc")
    assert rig.received(1) == b"abc"
    assert rig.received(0) == b""


def test_input_for_a_full_client_queue_is_dropped_and_counted(rig: SerialRig) -> None:
    rig.type(b"1" * 4000)
    rig.type(b"2" * 200)
    got = rig.received(0)
    assert got == b"1" * 4000 + b"2" * (SIZE - 4000)
    assert rig.bench.counters(VIRT_RX)["client0.rx_dropped"] == 4200 - SIZE
    rig.type(b"after")
    assert rig.received(0) == b"after"


def _corrupt_tail(rig: SerialRig, client: int) -> None:
    """Client ``client`` stores a garbage tail in its tx queue's header."""
    component = rig.bench.component(client_name(client))
    header = component.regions[f"serial_tx_{client_name(client)}_queue"]
    struct.pack_into("<I", header, 0, 0x7FFF_0000)


def test_a_client_writing_garbage_indices_is_refused_others_flow(rig: SerialRig) -> None:
    _corrupt_tail(rig, 1)
    rig.bench.component(client_name(1)).notify(rig.clients[1].tx_channel)
    rig.write(0, b"still here")
    rig.bench.run()
    assert rig.output() == RED + b"still here" + END
    assert rig.bench.counters(VIRT_TX)["client1:serial_tx.protocol_errors"] >= 1


def test_a_driver_writing_garbage_indices_is_refused(rig: SerialRig) -> None:
    header = rig.bench.component(DRIVER).regions["serial_rx_driver_queue"]
    struct.pack_into("<I", header, 0, 0x7FFF_0000)
    rig.bench.component(DRIVER).notify(rig.driver.rx_channel)
    rig.bench.run()
    assert rig.bench.counters(VIRT_RX)[f"{VIRT_RX}:driver_rx.protocol_errors"] == 1
    assert rig.received(0) == b""


# ---- the producer_signalled protocol ------------------------------------------------------------

def test_virt_tx_notifies_the_driver_after_every_publish(rig: SerialRig) -> None:
    before = rig.notifies(VIRT_TX, DRIVER)
    rig.write(0, b"one")
    rig.bench.run()
    rig.write(1, b"two")
    rig.bench.run()
    assert rig.notifies(VIRT_TX, DRIVER) == before + 2


def test_virt_tx_notifies_a_client_only_when_it_asked(rig: SerialRig) -> None:
    tx = rig.clients[0].tx
    tx.cancel_signal()  # a fresh (zeroed) header's flag reads as a standing request
    rig.write(0, b"unasked")
    rig.bench.run()
    assert rig.notifies(VIRT_TX, client_name(0)) == 0
    rig.output()
    tx.enqueue(b"f" * SIZE)
    assert not tx.request_and_recheck(), "the queue is full: the client waits for a signal"
    rig.bench.component(client_name(0)).notify(rig.clients[0].tx_channel)
    rig.bench.run()
    assert rig.notifies(VIRT_TX, client_name(0)) == 1
    assert not tx.signal_requested(), "virt_tx claims the request it answers"


def test_virt_rx_notifies_the_client_after_publishing(rig: SerialRig) -> None:
    rig.type(b"k")
    rig.type(b"\x1c2\rk")
    assert rig.notifies(VIRT_RX, client_name(0)) == 1
    assert rig.notifies(VIRT_RX, client_name(2)) == 1
    assert rig.notifies(VIRT_RX, client_name(1)) == 0


def test_virt_rx_notifies_the_driver_only_when_it_asked(rig: SerialRig) -> None:
    rx = rig.driver.rx
    rx.cancel_signal()  # a fresh (zeroed) header's flag reads as a standing request
    rig.type(b"unasked")
    rig.received(0)
    assert rig.notifies(VIRT_RX, DRIVER) == 0
    rx.enqueue(b"k" * SIZE)
    assert not rx.request_and_recheck()
    rig.bench.component(DRIVER).notify(rig.driver.rx_channel)
    rig.bench.run()
    assert rig.notifies(VIRT_RX, DRIVER) == 1
    assert not rx.signal_requested()


# ---- restarts -----------------------------------------------------------------------------------

def test_restarted_virt_tx_re_examines_its_queues_without_a_second_banner(rig: SerialRig) -> None:
    rig.write(0, b"a" * 4000)
    rig.bench.run()
    rig.write(1, b"w" * 100)  # does not fit: client1 waits in the FIFO
    rig.bench.run()
    rig.write(2, b"lost notify")
    rig.bench.kill(VIRT_TX)  # its FIFO and client2's notification die with it
    rig.bench.restart(VIRT_TX)
    rig.bench.run()
    out = rig.output()
    _room_signal(rig)
    out += rig.output()
    assert b"is client" not in out and b"Begin input" not in out
    # re-derived: client2's batch fits at once, client1's still waits for the driver's room
    assert out == RED + b"a" * 4000 + END + YELLOW + b"lost notify" + END + GREEN + b"w" * 100 + END


def test_restarted_virt_rx_goes_on_with_the_current_client(rig: SerialRig) -> None:
    rig.type(b"\x1c2\r")
    rig.bench.kill(VIRT_RX)
    rig.bench.restart(VIRT_RX)
    rig.bench.run()
    rig.type(b"still two")
    assert rig.received(2) == b"still two"
    assert rig.received(0) == b""
