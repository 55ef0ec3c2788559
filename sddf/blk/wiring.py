"""``Sddf.Blk``: wires a block driver, its virtualiser and their clients the way sdfgen does."""
from __future__ import annotations

from dataclasses import asdict

from sddf.blk.config import (CLIENT_DATA_SIZE, CLIENT_QUEUE_CAPACITY, IO_THREADS, BlkClientConfig, BlkDriverConfig,
                             BlkQueues, BlkVirtClient, BlkVirtConfig)
from sddf.blk.queue import BLK_TRANSFER_SIZE, STORAGE_INFO_SIZE, req_queue_size, resp_queue_size
from sddf.net.config import DataRegion
from sddf.shm import round_to_pages
from sddf.system import Channel, Irq, Map, MemoryRegion, ProtectionDomain, QueueInfo, SystemDescription

#: the virtualiser's own data region: room for a GPT's header and 128 entries, read in one request
VIRT_DATA_SIZE = 64 * 1024


class Blk:
    """A block driver serving ``image`` (a disk image file or block device), the virtualiser that
    gives each client one partition, and those clients; ``read_only`` opens the image read-only."""

    def __init__(self, sdf: SystemDescription, driver: ProtectionDomain, virt: ProtectionDomain,
                 image: str, read_only: bool = False, serial_number: str = "pysddf",
                 io_threads: int = IO_THREADS, delay_us: int = 0) -> None:
        """``io_threads``: requests the driver runs at once (0: one at a time, in its handler —
        deterministic, for ``sddf.testing``); ``delay_us``: latency added to every request (a
        slower disk than the host's)."""
        self.sdf, self.driver, self.virt = sdf, driver, virt
        self.image, self.read_only, self.serial_number = image, read_only, serial_number
        self.io_threads, self.delay_us = io_threads, delay_us
        self.clients: list[tuple[ProtectionDomain, int, int, int]] = []

    def add_client(self, client: ProtectionDomain, partition: int = 0,
                   queue_capacity: int = CLIENT_QUEUE_CAPACITY, data_size: int = CLIENT_DATA_SIZE) -> None:
        """Give ``client`` partition number ``partition`` of the disk (as sdfgen's ``add_client``)."""
        if queue_capacity <= 0 or data_size < BLK_TRANSFER_SIZE:
            raise ValueError(f"block client {client.name!r}: queue_capacity must be positive and data_size "
                             f"at least {BLK_TRANSFER_SIZE} (got {queue_capacity}, {data_size})")
        self.clients.append((client, partition, queue_capacity, data_size))

    def _queues(self, label: str, requester: ProtectionDomain, server: ProtectionDomain,
                capacity: int) -> tuple[BlkQueues, BlkQueues]:
        """Request/response queues and a storage info page that ``server`` publishes; returns each
        side's view (channel ids differ)."""
        regions = []
        for part, size, kind in (("req", req_queue_size(capacity), "blk.req"),
                                 ("resp", resp_queue_size(capacity), "blk.resp")):
            mr = self.sdf.add_mr(MemoryRegion(f"{label}_{part}", round_to_pages(size)))
            requester.add_map(Map(mr, "rw"))
            server.add_map(Map(mr, "rw"))
            self.sdf.add_queue(QueueInfo(mr.name, mr.name, 0, kind, capacity))
            regions.append(mr)
        info = self.sdf.add_mr(MemoryRegion(f"{label}_storage_info", round_to_pages(STORAGE_INFO_SIZE)))
        requester.add_map(Map(info, "r"))
        server.add_map(Map(info, "rw"))
        ch = self.sdf.add_channel(Channel(requester, server))
        req, resp = (mr.name for mr in regions)
        return (BlkQueues(req, resp, info.name, capacity, ch.pd_a_id),
                BlkQueues(req, resp, info.name, capacity, ch.pd_b_id))

    def connect(self) -> None:
        virt_data = self.sdf.add_io_mr(f"blk_virt_data_{self.virt.name}", VIRT_DATA_SIZE)
        self.virt.add_map(Map(virt_data, "rw"))
        self.driver.add_map(Map(virt_data, "rw"))
        driver_data = [DataRegion(virt_data.name, virt_data.io_addr, virt_data.size)]
        ports = []
        for client, partition, capacity, data_size in self.clients:
            data = self.sdf.add_io_mr(f"blk_data_{client.name}", data_size)
            client.add_map(Map(data, "rw"))
            self.driver.add_map(Map(data, "rw"))
            driver_data.append(DataRegion(data.name, data.io_addr, data.size))
            client_view, virt_view = self._queues(f"blk_{client.name}", client, self.virt, capacity)
            ports.append(BlkVirtClient(client.name, virt_view, partition, DataRegion("", data.io_addr, data.size)))
            client.config["blk"] = asdict(BlkClientConfig(client_view, DataRegion(data.name, 0, data.size)))
        total = sum(capacity for _, _, capacity, _ in self.clients) or CLIENT_QUEUE_CAPACITY
        virt_view, driver_view = self._queues(f"blk_driver_{self.driver.name}", self.virt, self.driver, total)
        source = f"blk:{self.image}" + (",access=ro" if self.read_only else "")
        irq = self.sdf.add_irq(Irq(self.driver, source))
        self.driver.config.update(asdict(BlkDriverConfig(irq.id, driver_view, driver_data, self.serial_number,
                                                           self.io_threads, self.delay_us)))
        self.virt.config.update(asdict(BlkVirtConfig(
            virt_view, DataRegion(virt_data.name, virt_data.io_addr, virt_data.size), ports)))
        # the driver's words: the id of each request it has taken and not answered (a restart
        # answers them); the virtualiser's: which client (and client id) each driver id stands for
        self.driver.ledger_words = total
        self.virt.ledger_words = total
