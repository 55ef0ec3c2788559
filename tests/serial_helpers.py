"""A serial system on the test bench whose driver and clients are stubs the test plays.

``Sddf.Serial`` wires the real virt_tx and virt_rx; the driver and clients are idle
PDs that do nothing by themselves: the test holds their queue ends (the same shared memory)
and reads the bench's notify record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sddf.classes import Sddf
from sddf.config import typed
from sddf.serial.config import SerialClientConfig, SerialDriverConfig
from sddf.system import ProtectionDomain, SystemDescription
from sddf.testing import Bench

DRIVER, VIRT_TX, VIRT_RX = "uart", "serial_virt_tx", "serial_virt_rx"
STUB = "components.idle:Idle"  # a driver's or client's place: the test plays its queue ends


@dataclass
class Ends:
    """A stub PD's queue ends (as the test plays them) and its channels."""

    tx: Any  # driver: SerialConsumer of virt_tx's output; client: SerialProducer into virt_tx
    rx: Any  # driver: SerialProducer into virt_rx; client: SerialConsumer of virt_rx's output
    tx_channel: int
    rx_channel: int | None


@dataclass
class SerialRig:
    """The bench, the driver's ends and each client's ends."""

    bench: Bench
    driver: Ends
    clients: list[Ends] = field(default_factory=list)

    def notifies(self, sender: str, receiver: str) -> int:
        return sum(1 for n in self.bench.notifies if n.sender == sender and n.receiver == receiver)

    def write(self, client: int, data: bytes) -> None:
        """Client ``client`` publishes ``data`` (all of it must fit) and notifies virt_tx."""
        ends = self.clients[client]
        assert ends.tx.enqueue(data) == len(data)
        self.bench.component(client_name(client)).notify(ends.tx_channel)

    def type(self, data: bytes) -> None:
        """The driver publishes typed ``data`` and notifies virt_rx; the system runs."""
        assert self.driver.rx.enqueue(data) == len(data)
        self.bench.component(DRIVER).notify(self.driver.rx_channel)
        self.bench.run()

    def output(self) -> bytes:
        """What virt_tx has put on the driver's queue (taken)."""
        return self.driver.tx.dequeue()

    def received(self, client: int) -> bytes:
        return self.clients[client].rx.dequeue()


def client_name(i: int) -> str:
    return f"client{i}"


def serial_system(clients: int = 3, *, rx: bool = True, color: bool = True, data_size: int = 0x1000,
                  client: str = STUB, client_config: dict[str, Any] | None = None) -> SystemDescription:
    """Real virt_tx (and virt_rx with ``rx``) between a stub driver and ``clients`` PDs running
    ``client`` (stubs by default) with ``client_config``."""
    sdf = SystemDescription()
    driver = sdf.add_pd(ProtectionDomain(DRIVER, STUB, priority=200))
    virt_tx = sdf.add_pd(ProtectionDomain(VIRT_TX, "sddf.virtualisers.serial.tx:SerialVirtTx", priority=150))
    virt_rx = sdf.add_pd(ProtectionDomain(VIRT_RX, "sddf.virtualisers.serial.rx:SerialVirtRx", priority=150)) if rx else None
    serial = Sddf.Serial(sdf, driver, virt_tx, virt_rx, enable_color=color, device="timerfd", data_size=data_size)
    for i in range(clients):
        pd = sdf.add_pd(ProtectionDomain(client_name(i), client, priority=100))
        pd.config.update(client_config or {})
        serial.add_client(pd)
    serial.connect()
    return sdf


def serial_rig(clients: int = 3, **options: Any) -> SerialRig:
    """A started bench of :func:`serial_system` with the stubs' queue ends."""
    bench = Bench(serial_system(clients, **options))
    bench.start()
    drv = typed(SerialDriverConfig, bench.component(DRIVER).pd.app, DRIVER)
    regions = bench.component(DRIVER).regions
    rx = drv.rx.producer("test:driver_rx", regions) if drv.rx is not None else None
    rig = SerialRig(bench, Ends(drv.tx.consumer("test:driver_tx", regions), rx, drv.tx.channel,
                                drv.rx.channel if drv.rx is not None else None))
    for i in range(clients):
        component = bench.component(client_name(i))
        cfg = typed(SerialClientConfig, component.pd.app["serial"], client_name(i))
        crx = cfg.rx.consumer(f"test:{client_name(i)}_rx", component.regions) if cfg.rx is not None else None
        rig.clients.append(Ends(cfg.tx.producer(f"test:{client_name(i)}_tx", component.regions), crx,
                                cfg.tx.channel, cfg.rx.channel if cfg.rx is not None else None))
    return rig
