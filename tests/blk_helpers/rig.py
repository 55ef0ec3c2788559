"""A block system on the test bench: the image-file driver (or a driver the test plays), the
block virtualiser and idle client PDs whose queues the test drives with :class:`BlkClient`."""
from __future__ import annotations

from collections import Counter, deque
from typing import Iterable

from sddf.blk.client import BlkClient
from sddf.blk.config import BlkClientConfig, BlkDriverConfig
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, BlkStorageInfo, ReqConsumer, RespProducer,
                            set_not_ready, write_storage_info)
from sddf.classes import Sddf
from sddf.component import Component
from sddf.config import typed
from sddf.system import ProtectionDomain, SystemDescription
from sddf.testing import Bench

FILE_DRIVER = "sddf.drivers.blk.file:FileBlkDriver"
IDLE = "blk_helpers.rig:Idle"
VIRT = "sddf.virtualisers.blk.virt:BlkVirt"
DRIVER_PD, VIRT_PD = "blk_driver", "blk_virt"


class Idle(Component):
    """A client's (or the driver's) place: the test drives its queues."""

    kind = "test.idle"

    def notified(self, ch: int) -> None:
        pass


class BlkRig:
    """``clients`` (name → (partition, queue capacity, data size)) of the virtualiser over the
    image at ``image``, served by the image-file driver (``driver=FILE_DRIVER``, I/O inline) or by
    an idle PD the test plays (``driver=IDLE``, see :class:`ScriptedDriver`)."""

    def __init__(self, image: str, clients: dict[str, tuple[int, int, int]], driver: str = FILE_DRIVER) -> None:
        sdf = SystemDescription("blk_virt_test")
        self.driver_pd = sdf.add_pd(ProtectionDomain(DRIVER_PD, driver, priority=200))
        virt = sdf.add_pd(ProtectionDomain(VIRT_PD, VIRT, priority=150))
        blk = Sddf.Blk(sdf, self.driver_pd, virt, image, io_threads=0)
        pds = {}
        for i, (name, (partition, capacity, data_size)) in enumerate(clients.items()):
            pds[name] = sdf.add_pd(ProtectionDomain(name, IDLE, priority=100 - i))
            blk.add_client(pds[name], partition=partition, queue_capacity=capacity, data_size=data_size)
        blk.connect()
        self.image = image
        self.pds = pds
        self.bench = Bench(sdf)
        self.bench.start()
        self.refused: Counter[str] = Counter()
        self.clients = {name: BlkClient(name, self.bench.component(name).regions, self.client_config(name),
                                        self._refuse) for name in pds}

    def client_config(self, name: str) -> BlkClientConfig:
        return typed(BlkClientConfig, self.pds[name].config["blk"], name)

    def _refuse(self, counter: str, _message: object) -> None:
        self.refused[counter] += 1

    def kick(self, *names: str) -> None:
        """Notify the virtualiser from these clients (after they queued requests)."""
        for name in names:
            self.bench.component(name).notify(self.clients[name].channel)

    def virt_counters(self) -> Counter[str]:
        return self.bench.counters(VIRT_PD)

    def close(self) -> None:
        self.bench.close()


class ScriptedDriver:
    """The driver's side of the virtualiser's queues, played by the test over ``disk``: it takes
    requests into ``pending`` and answers them when told (READ and WRITE against ``disk``)."""

    def __init__(self, rig: BlkRig, disk: bytearray) -> None:
        self.rig, self.disk = rig, disk
        cfg = typed(BlkDriverConfig, rig.driver_pd.config, DRIVER_PD)
        regions = rig.bench.component(DRIVER_PD).regions
        req, resp, capacity = cfg.virt.views(regions)
        self.requests = ReqConsumer("test:req", req, capacity)
        self.responses = RespProducer("test:resp", resp, capacity)
        self.info = regions[cfg.virt.storage_info]
        self.channel = cfg.virt.channel
        self.data = [(d.io_addr, regions[d.map]) for d in cfg.data]
        self.pending: deque[tuple[int, int, int, int, int]] = deque()

    def publish(self) -> None:
        write_storage_info(self.info, BlkStorageInfo(b"scripted", False, 512, 1, self.requests.capacity, 0, 0, 0,
                                                     len(self.disk) // BLK_TRANSFER_SIZE))
        self.notify()

    def withdraw(self) -> None:
        set_not_ready(self.info)

    def notify(self) -> None:
        self.rig.bench.component(DRIVER_PD).notify(self.channel)

    def take(self) -> int:
        got = self.requests.dequeue_many()
        self.pending.extend(got)
        return len(got)

    def _view(self, io_addr: int, count: int) -> memoryview:
        for base, view in self.data:
            if base <= io_addr and io_addr + count * BLK_TRANSFER_SIZE <= base + len(view):
                return view[io_addr - base:io_addr - base + count * BLK_TRANSFER_SIZE]
        raise AssertionError(f"the virtualiser named io address {io_addr:#x} ({count} blocks), in no data region")

    def answer(self, limit: int | None = None) -> list[tuple[int, int, int, int, int]]:
        """Do and answer up to ``limit`` pending requests (all if None), notify; return them."""
        done = []
        while self.pending and (limit is None or len(done) < limit):
            code, io_addr, block, count, rid = self.pending.popleft()
            at = block * BLK_TRANSFER_SIZE
            if code == BlkReqCode.READ:
                self._view(io_addr, count)[:] = self.disk[at:at + count * BLK_TRANSFER_SIZE]
            elif code == BlkReqCode.WRITE:
                self.disk[at:at + count * BLK_TRANSFER_SIZE] = self._view(io_addr, count)
            done.append((code, io_addr, block, count, rid))
        self.send((BlkRespStatus.OK, count, rid) for code, _, _, count, rid in done)
        return done

    def send(self, responses: Iterable[tuple[int, int, int]]) -> None:
        out = list(responses)
        if out:
            assert self.responses.enqueue_many(out) == len(out)
            self.notify()

