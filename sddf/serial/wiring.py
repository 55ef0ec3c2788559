"""``Sddf.Serial``: wires a serial driver, virt_tx, an optional virt_rx and their clients the way sdfgen does."""
from __future__ import annotations

from dataclasses import asdict

from sddf.serial.config import (BEGIN_STR, DATA_SIZE, QUEUE_REGION_SIZE, SerialClientConfig, SerialClientPort,
                                SerialDriverConfig, SerialQueue, SerialVirtRxConfig, SerialVirtTxConfig)
from sddf.system import Channel, Irq, Map, MemoryRegion, ProtectionDomain, QueueInfo, SystemDescription


class Serial:
    """A serial driver on ``device`` (an irq source: ``serial:console`` — the terminal ``sddf run``
    runs in —, ``serial:stdout`` — its stdout, output only —, ``serial:pty`` — a new pty whose path
    is printed —, or ``serial:tty=/dev/…``; by default the console with virt_rx, stdout without),
    virt_tx multiplexing its clients' output and, if given, virt_rx switching input between them.
    A client's :meth:`Component.log` lines go to the console."""

    def __init__(self, sdf: SystemDescription, driver: ProtectionDomain, virt_tx: ProtectionDomain,
                 virt_rx: ProtectionDomain | None = None, enable_color: bool = True, begin_str: str = BEGIN_STR,
                 device: str | None = None, data_size: int = DATA_SIZE) -> None:
        self.sdf, self.driver, self.virt_tx, self.virt_rx = sdf, driver, virt_tx, virt_rx
        self.enable_color, self.begin_str, self.data_size = enable_color, begin_str, data_size
        self.device = device or ("serial:console" if virt_rx is not None else "serial:stdout")
        self.clients: list[ProtectionDomain] = []

    def add_client(self, client: ProtectionDomain) -> None:
        self.clients.append(client)

    def _queue(self, label: str, producer: ProtectionDomain, consumer: ProtectionDomain
               ) -> tuple[SerialQueue, SerialQueue]:
        """A queue ``producer`` fills and ``consumer`` drains (header and data regions, a channel);
        returns the producer's and the consumer's view."""
        header = self.sdf.add_mr(MemoryRegion(f"{label}_queue", QUEUE_REGION_SIZE))
        data = self.sdf.add_mr(MemoryRegion(f"{label}_data", self.data_size))
        for pd in (producer, consumer):
            pd.add_map(Map(header, "rw"))
            pd.add_map(Map(data, "rw"))
        self.sdf.add_queue(QueueInfo(header.name, header.name, 0, "serial", self.data_size))
        ch = self.sdf.add_channel(Channel(producer, consumer))
        return (SerialQueue(header.name, data.name, self.data_size, ch.pd_a_id),
                SerialQueue(header.name, data.name, self.data_size, ch.pd_b_id))

    def connect(self) -> None:
        virt_tx_out, driver_in = self._queue("serial_tx_driver", self.virt_tx, self.driver)
        driver_rx = virt_rx_in = None
        if self.virt_rx is not None:
            driver_rx, virt_rx_in = self._queue("serial_rx_driver", self.driver, self.virt_rx)
        tx_ports, rx_ports = [], []
        for client in self.clients:
            client_tx, virt_tx_view = self._queue(f"serial_tx_{client.name}", client, self.virt_tx)
            tx_ports.append(SerialClientPort(client.name, virt_tx_view))
            client_rx = None
            if self.virt_rx is not None:
                virt_rx_view, client_rx = self._queue(f"serial_rx_{client.name}", self.virt_rx, client)
                rx_ports.append(SerialClientPort(client.name, virt_rx_view))
            client.config["serial"] = asdict(SerialClientConfig(client_tx, client_rx))
        irq = self.sdf.add_irq(Irq(self.driver, self.device))
        self.driver.config.update(asdict(SerialDriverConfig(irq.id, driver_in, driver_rx)))
        self.virt_tx.config.update(asdict(SerialVirtTxConfig(
            virt_tx_out, tx_ports, self.enable_color, self.begin_str if self.virt_rx is not None else None)))
        if self.virt_rx is not None:
            assert virt_rx_in is not None
            self.virt_rx.ledger_words = 1  # the current client, kept across its restarts
            self.virt_rx.config.update(asdict(SerialVirtRxConfig(virt_rx_in, rx_ports)))
