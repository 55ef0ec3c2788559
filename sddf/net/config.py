"""Net configs: what the TAP driver, virtualisers, copiers and clients are handed (built by ``Sddf.Net``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

#: descriptors a driver, virtualiser, copier or client moves per pass before it notifies and goes on
BATCH = 64


@dataclass
class QueuePair:
    """A free/active net queue pair: the map names of its two queues, their capacity, and the
    channel to the component at the other end."""

    free: str
    active: str
    capacity: int
    channel: int

    def views(self, regions: Mapping[str, memoryview]) -> tuple[memoryview, memoryview, int]:
        """(free queue, active queue, capacity) from a component's mapped regions."""
        return regions[self.free], regions[self.active], self.capacity


@dataclass
class DataRegion:
    """A buffer data region as this component maps it, and its io address ("physical")."""

    map: str
    io_addr: int
    size: int


@dataclass
class NetDriverConfig:
    """A net driver: its device irq, the rx pair with virt_rx, the tx pair with virt_tx, the rx
    buffer region and every region virt_tx may hand it buffers from (looked up by io address)."""

    irq: int
    rx: QueuePair
    tx: QueuePair
    rx_data: DataRegion
    tx_data: list[DataRegion]
    batch: int = BATCH


@dataclass
class NetClientPort:
    """What a virtualiser knows of one client: its queue pair, MAC and (tx) data region."""

    name: str
    queues: QueuePair
    mac: bytes
    data: DataRegion | None = None


@dataclass
class NetVirtRxConfig:
    """virt_rx: the driver's rx pair, the rx data region (io address and size), and its clients."""

    driver: QueuePair
    data: DataRegion
    clients: list[NetClientPort]
    batch: int = BATCH


@dataclass
class NetVirtTxConfig:
    """virt_tx: the driver's tx pair and its clients (each with its own tx data region)."""

    driver: QueuePair
    clients: list[NetClientPort]
    batch: int = BATCH  # also each busy client's turn when the driver's queue is short of room


@dataclass
class NetCopierConfig:
    """A copier: the pair with virt_rx over the shared rx data, the pair with its client over the
    client's private rx data."""

    virt: QueuePair
    virt_data: DataRegion
    client: QueuePair
    client_data: DataRegion
    batch: int = BATCH


@dataclass
class NetClientConfig:
    """A network client: its rx and tx pairs and data regions, MAC, IPv4 address and timer channel."""

    rx: QueuePair
    tx: QueuePair
    rx_data: DataRegion
    tx_data: DataRegion
    mac: bytes
    ip: str
    timer: int | None = None
    owns_rx_buffers: bool = False  # behind a copier: the client fills its rx free queue itself
    batch: int = BATCH

