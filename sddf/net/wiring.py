"""``Sddf.Net``: wires a TAP driver, virt_rx, virt_tx, copiers and clients the way sdfgen does."""
from __future__ import annotations

from dataclasses import asdict

from sddf.net.config import (BATCH, DataRegion, NetClientConfig, NetClientPort, NetCopierConfig, NetDriverConfig,
                             NetVirtRxConfig, NetVirtTxConfig, QueuePair)
from sddf.net.queue import NET_BUFFER_SIZE, queue_size
from sddf.shm import round_to_pages
from sddf.system import Channel, Irq, LedgerInfo, Map, MemoryRegion, ProtectionDomain, QueueInfo, SystemDescription


class Net:
    """A TAP net driver, virt_rx, virt_tx and their clients, wired like sdfgen's ``Sddf.Net``.

    Each client gets its own MAC and IPv4 address; a client added with a copier never maps the
    rx region the driver writes into. The TAP's host side gets ``host_addr``.
    """

    def __init__(self, sdf: SystemDescription, driver: ProtectionDomain, virt_tx: ProtectionDomain,
                 virt_rx: ProtectionDomain, tap: str = "sddf0", host_addr: str = "10.0.0.1/24",
                 mtu: int = 1500, capacity: int = 512, irq_number: int | None = None, batch: int = BATCH) -> None:
        """``irq_number``: the NIC's interrupt on the target board, for the Microkit export only;
        ``batch``: what each component moves per pass before it notifies and goes on."""
        self.sdf, self.driver, self.virt_tx, self.virt_rx = sdf, driver, virt_tx, virt_rx
        self.irq_number = irq_number
        self.tap, self.host_addr, self.mtu, self.capacity, self.batch = tap, host_addr, mtu, capacity, batch
        self.clients: list[tuple[ProtectionDomain, ProtectionDomain | None, bytes, str]] = []

    def add_client(self, client: ProtectionDomain, mac: bytes, ip: str) -> None:
        self.clients.append((client, None, mac, ip))

    def add_client_with_copier(self, client: ProtectionDomain, copier: ProtectionDomain,
                               mac: bytes, ip: str) -> None:
        self.clients.append((client, copier, mac, ip))

    # ---- wiring ---------------------------------------------------------------------------
    def _io_region(self, name: str, size: int) -> MemoryRegion:
        used = [mr.io_addr + mr.size for mr in self.sdf.regions if mr.io_addr is not None]
        base = -(-max(used, default=0x4000_0000) // IO_ALIGN) * IO_ALIGN
        return self.sdf.add_mr(MemoryRegion(name, round_to_pages(size), io_addr=base))

    def _pair(self, label: str, producer_of_free: ProtectionDomain, consumer_of_free: ProtectionDomain,
              pools: tuple[tuple[str, int, int], ...]) -> tuple[QueuePair, QueuePair]:
        """A free/active queue pair between two PDs, carrying buffers of ``pools`` (see
        :class:`QueueInfo`), each queue able to hold every one of them (as sdfgen sizes the
        virtualiser ↔ driver queues: a queue that cannot take a returned buffer would lose it);
        returns each side's view (channel ids differ)."""
        buffers = sum(size for _, _, size in pools) // NET_BUFFER_SIZE
        capacity = max(self.capacity, 1 << (buffers - 1).bit_length())  # net capacities are powers of two
        size = round_to_pages(queue_size(capacity))
        free = self.sdf.add_mr(MemoryRegion(f"{label}_free", size))
        active = self.sdf.add_mr(MemoryRegion(f"{label}_active", size))
        for pd in (producer_of_free, consumer_of_free):
            pd.add_map(Map(free, "rw"))
            pd.add_map(Map(active, "rw"))
        for mr in (free, active):
            self.sdf.add_queue(QueueInfo(mr.name, mr.name, 0, "net", capacity, pools))
        ch = self.sdf.add_channel(Channel(producer_of_free, consumer_of_free))
        return (QueuePair(free.name, active.name, capacity, ch.pd_a_id),
                QueuePair(free.name, active.name, capacity, ch.pd_b_id))

    def connect(self) -> None:
        data_size = self.capacity * NET_BUFFER_SIZE
        rx_data = self.sdf.add_io_mr("net_rx_data", data_size)
        self.driver.add_map(Map(rx_data, "rw"))
        self.virt_rx.add_map(Map(rx_data, "r"))
        tx_regions = [self.sdf.add_io_mr(f"net_tx_data_{client.name}", data_size) for client, *_ in self.clients]
        virt_rx_drv, drv_rx = self._pair("net_drv_rx", self.virt_rx, self.driver, _pool(rx_data, rx_data.io_addr))
        drv_tx, virt_tx_drv = self._pair("net_drv_tx", self.driver, self.virt_tx,
                                         sum((_pool(mr, mr.io_addr) for mr in tx_regions), ()))
        rx_ports, tx_ports, tx_datas = [], [], []
        for (client, copier, mac, ip), tx_data in zip(self.clients, tx_regions):
            name = client.name
            client.add_map(Map(tx_data, "rw"))
            self.driver.add_map(Map(tx_data, "r"))
            tx_datas.append(DataRegion(tx_data.name, tx_data.io_addr, tx_data.size))
            virt_tx_view, client_tx = self._pair(f"net_tx_{name}", self.virt_tx, client, _pool(tx_data, 0))
            tx_ports.append(NetClientPort(name, virt_tx_view, mac, DataRegion("", tx_data.io_addr, tx_data.size)))
            receiver = copier if copier is not None else client
            receiver.add_map(Map(rx_data, "r"))
            receiver_view, virt_rx_view = self._pair(f"net_rx_{receiver.name}", receiver, self.virt_rx,
                                                     _pool(rx_data, 0))
            rx_ports.append(NetClientPort(name, virt_rx_view, mac))
            if copier is None:
                client_rx, client_rx_data = receiver_view, DataRegion(rx_data.name, rx_data.io_addr, rx_data.size)
            else:
                private = self.sdf.add_mr(MemoryRegion(f"net_rx_data_{name}", data_size))
                copier.add_map(Map(private, "rw"))
                client.add_map(Map(private, "rw"))
                client_rx, copier_side = self._pair(f"net_rx_{name}", client, copier, _pool(private, 0))
                client_rx_data = DataRegion(private.name, 0, private.size)
                copier.config.update(asdict(NetCopierConfig(
                    receiver_view, DataRegion(rx_data.name, rx_data.io_addr, rx_data.size),
                    copier_side, DataRegion(private.name, 0, private.size), self.batch)))
            client.config.update(asdict(NetClientConfig(
                client_rx, client_tx, client_rx_data, DataRegion(tx_data.name, tx_data.io_addr, tx_data.size),
                mac, ip, owns_rx_buffers=copier is not None, batch=self.batch)))
        irq = self.sdf.add_irq(Irq(self.driver, f"tap:{self.tap},mtu={self.mtu},addr={self.host_addr}",
                                   number=self.irq_number))
        self.driver.config.update(asdict(NetDriverConfig(
            irq.id, drv_rx, drv_tx, DataRegion(rx_data.name, rx_data.io_addr, rx_data.size), tx_datas, self.batch)))
        self.virt_rx.config.update(asdict(NetVirtRxConfig(
            virt_rx_drv, DataRegion(rx_data.name, rx_data.io_addr, rx_data.size), rx_ports, self.batch)))
        self.virt_tx.config.update(asdict(NetVirtTxConfig(virt_tx_drv, tx_ports, self.batch)))
        # a ledger word per buffer: who holds each rx buffer, where each tx buffer is (sddf.ledger)
        self.virt_rx.ledger_words = rx_data.size // NET_BUFFER_SIZE
        self.virt_tx.ledger_words = sum(mr.size // NET_BUFFER_SIZE for mr in tx_regions)
        self.sdf.ledgers += [LedgerInfo(self.virt_rx.name, "net.virt_rx", _pool(rx_data, rx_data.io_addr)),
                             LedgerInfo(self.virt_tx.name, "net.virt_tx", sum((_pool(mr, 0) for mr in tx_regions), ()))]


def _pool(region: MemoryRegion, base: int) -> tuple[tuple[str, int, int]]:
    """The buffer pool a data region holds, as a queue names its buffers (from ``base``)."""
    return ((region.name, base, region.size),)
