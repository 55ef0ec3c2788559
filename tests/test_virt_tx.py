"""virt_tx in-process (no monitor): fair round-robin between clients, and the signalling that
brings a drained client back."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from typing import Iterator

import pytest

from sddf.config import ChannelGrant, PdConfig, RegionGrant
from sddf.net.queue import (NET_BUFFER_SIZE, NetConsumer, NetProducer, consuming_side, producing_side,
                            queue_size)
from sddf.shm import Region, RegionError, round_to_pages
from sddf.channel import channel_pair
from sddf.virtualisers.net.tx import NetVirtTx

DRIVER_CH = 0
DRIVER_CAPACITY = 16
CLIENT_CAPACITY = 256
CLIENT_BUFFERS = 256
BATCH = 4
IO_BASE = 0x1000_0000


@dataclasses.dataclass
class TxHarness:
    virt: NetVirtTx
    driver_free: NetProducer  # the driver's end: returns sent buffers
    driver_active: NetConsumer  # the driver's end: takes what virt_tx sends
    clients: list[tuple[NetConsumer, NetProducer]]  # each client's (free, active) ends

    def submit(self, client: int, count: int, first: int = 0) -> None:
        _free, active = self.clients[client]
        sent = active.enqueue_many([((first + i) * NET_BUFFER_SIZE, 60, 0) for i in range(count)])
        assert sent == count
        if active.signal_needed():  # as a client does: notify only if virt_tx asked
            self.notify_virt(client + 1)

    def transmit(self) -> int:
        """Act as the driver: take every queued frame, return its buffer, notify if asked."""
        descs = self.driver_active.dequeue_many()
        assert self.driver_free.enqueue_many([(io, 0, oid) for io, _, oid in descs]) == len(descs)
        if descs and self.driver_free.signal_needed():
            self.notify_virt(DRIVER_CH)
        return len(descs)

    def notify_virt(self, ch: int) -> None:
        """Deliver a notification as virt_tx's loop does: the handler, then its commit."""
        self.virt.notified(ch)
        self.virt.ledger.commit()

    def sent_by(self) -> list[int]:
        """Which client each frame on the driver's queue came from, in order."""
        span = CLIENT_BUFFERS * NET_BUFFER_SIZE
        return [(io - IO_BASE) // span for io, _, _ in self.driver_active.dequeue_many()]


@pytest.fixture
def tx() -> Iterator[TxHarness]:
    regions: dict[str, Region] = {}
    fds: list[int] = []  # what the virtualiser was handed: closed after the test

    def region(name: str, size: int) -> RegionGrant:
        regions[name] = Region.create(name, round_to_pages(size))
        fds.append(os.dup(regions[name].fd))
        return RegionGrant(fds[-1], regions[name].size, True)

    grants = {"drv_free": region("drv_free", queue_size(DRIVER_CAPACITY)),
              "drv_active": region("drv_active", queue_size(DRIVER_CAPACITY))}
    channels, clients = {}, []
    for ch in range(3):
        mine, other = channel_pair()
        fds.extend([mine.recv_eventfd, mine.send_eventfd, mine.words_fd,
                    other.recv_eventfd, other.send_eventfd, other.words_fd])
        channels[ch] = ChannelGrant(**dataclasses.asdict(mine), peer=f"peer{ch}")
    for i in range(2):
        for q in ("free", "active"):
            grants[f"c{i}_{q}"] = region(f"c{i}_{q}", queue_size(CLIENT_CAPACITY))
        clients.append({"name": f"client{i}", "mac": bytes(6),
                        "queues": {"free": f"c{i}_free", "active": f"c{i}_active",
                                   "capacity": CLIENT_CAPACITY, "channel": i + 1},
                        "data": {"map": f"c{i}_data", "io_addr": IO_BASE + i * CLIENT_BUFFERS * NET_BUFFER_SIZE,
                                 "size": CLIENT_BUFFERS * NET_BUFFER_SIZE}})
    pd = PdConfig("net_virt_tx", "sddf.virtualisers.net.tx:NetVirtTx", 109, None, -1, ledger_words=2 * CLIENT_BUFFERS,
                  regions=grants, channels=channels,
                  app={"driver": {"free": "drv_free", "active": "drv_active", "capacity": DRIVER_CAPACITY,
                                  "channel": DRIVER_CH},
                       "clients": clients, "batch": BATCH})
    virt = NetVirtTx(pd)
    virt.start()
    drv_free, drv_active = consuming_side("driver.tx", regions["drv_free"].view, regions["drv_active"].view,
                                           DRIVER_CAPACITY)
    ends = [producing_side(f"client{i}.tx", regions[f"c{i}_free"].view, regions[f"c{i}_active"].view,
                           CLIENT_CAPACITY) for i in range(2)]
    harness = TxHarness(virt, drv_free, drv_active, ends)
    yield harness
    del virt, drv_active, drv_free, ends, harness.virt, harness.driver_free, harness.driver_active, harness.clients
    gc.collect()  # the queue ends' pointers into the regions go with them
    for r in regions.values():
        with contextlib.suppress(RegionError):  # a failed test's traceback may still hold a view
            r.close()
    for fd in fds:
        os.close(fd)


def test_a_flooding_client_does_not_starve_another(tx: TxHarness) -> None:
    tx.submit(0, 200)  # more than the driver's queue holds: client 0 stays busy
    assert tx.sent_by() == [0] * DRIVER_CAPACITY
    tx.submit(1, 3)  # the driver took everything: room for a full queue again
    # turns alternate: client 1's frames go out after one batch of client 0's, not after all 184
    assert tx.sent_by() == [0] * BATCH + [1] * 3 + [0] * (DRIVER_CAPACITY - BATCH - 3)


def test_a_drained_client_is_asked_to_notify_and_then_served(tx: TxHarness) -> None:
    for first in range(0, 9, 3):  # each submission reaches the driver: the client was asked again
        tx.submit(1, 3, first)
        assert tx.sent_by() == [1, 1, 1]
        assert tx.clients[1][1].signal_requested(), "a drained client must be asked to notify virt_tx"


def test_frames_beyond_the_drivers_queue_go_out_as_it_completes(tx: TxHarness) -> None:
    tx.submit(0, 100)  # over six driver queues' worth: the rest waits for room
    sent = [tx.transmit() for _ in range(10)]
    assert sum(sent) == 100, f"virt_tx must ask the driver for completions while frames wait: {sent}"


def test_a_client_resending_a_buffer_not_yet_given_back_is_refused(tx: TxHarness) -> None:
    free = tx.clients[0][0]
    assert free.length() == CLIENT_CAPACITY, "virt_tx puts every client buffer on its free queue at start"
    tx.submit(0, 1)  # buffer 0 again (it was given back): sent, but its return must wait for room
    tx.transmit()
    for _ in range(50):  # resending it while virt_tx still holds it
        tx.submit(0, 1)
        tx.transmit()
    waiting = tx.virt.clients[0].returns
    assert len(waiting) == 1, f"virt_tx accepted a buffer it still held: {len(waiting)} copies wait to go back"
    assert tx.virt.counters["client0.not_owned"] == 50
    tx.submit(1, 3)  # the other client is not disturbed
    assert tx.sent_by() == [1, 1, 1]


def test_a_client_that_sent_before_virt_tx_started_is_told_of_its_buffers() -> None:
    """A client whose first frame finds no tx buffer asks to be signalled and sleeps; a fresh
    virt_tx that then fills its free queue must notify it (spin found it did not:
    models/README.md, "Found")."""
    from components.early_sender import FRAME
    from sddf.apps.systems import echo
    from sddf.testing import Bench

    sdf = echo.system()
    sdf.pd("client0").program = "components.early_sender:EarlySender"
    with Bench(sdf) as bench:
        bench.start("timer", "eth_driver", "net_virt_rx", "client0", "client1_copier", "client1", "net_virt_tx")
        bench.run()
        assert bench.frames("eth_driver").recv(2048) == FRAME
