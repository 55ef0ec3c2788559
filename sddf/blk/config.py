"""Block configs: what the driver, the virtualiser and its clients are handed (built by ``Sddf.Blk``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from sddf.net.config import DataRegion

#: sdfgen's defaults for a block client
CLIENT_QUEUE_CAPACITY = 128
CLIENT_DATA_SIZE = 2 * 1024 * 1024
#: the block driver's I/O threads
IO_THREADS = 8


@dataclass
class BlkQueues:
    """A request/response queue pair: the map names of the queues and of the storage info its
    consumer of requests publishes, their capacity, and the channel to the other end."""

    req: str
    resp: str
    storage_info: str
    capacity: int
    channel: int

    def views(self, regions: Mapping[str, memoryview]) -> tuple[memoryview, memoryview, int]:
        """(request queue, response queue, capacity) from a component's mapped regions."""
        return regions[self.req], regions[self.resp], self.capacity


@dataclass
class BlkDriverConfig:
    """The block driver: the channel its image is granted on (an irq source ``blk:PATH``), its
    queues with the virtualiser, and every data region a request may name (by io address)."""

    device: int
    virt: BlkQueues
    data: list[DataRegion]
    serial_number: str = "pysddf"
    io_threads: int = IO_THREADS  # requests run at once (0: in the handler, one at a time)
    delay_us: int = 0  # added to every request: emulates a slower disk


@dataclass
class BlkVirtClient:
    """What the virtualiser knows of one client: its queues (with the storage info it fills in),
    the partition it is given (an index into the disk's table) and its data region's io address."""

    name: str
    queues: BlkQueues
    partition: int
    data: DataRegion


@dataclass
class BlkVirtConfig:
    """The virtualiser: its queues with the driver, its own data region (for the partition table)
    and its clients."""

    driver: BlkQueues
    data: DataRegion
    clients: list[BlkVirtClient] = field(default_factory=list)


@dataclass
class BlkClientConfig:
    """A block client's grant (its config's ``blk`` entry): its queues with the virtualiser (and
    the storage info of its partition) and its data region (requests name offsets from 0)."""

    queues: BlkQueues
    data: DataRegion
