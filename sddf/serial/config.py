"""Serial configs: what the driver, virt_tx, virt_rx and clients are handed (built by ``Sddf.Serial``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from sddf.serial.queue import SerialConsumer, SerialProducer

#: sdfgen's defaults: a queue's header region and its data region
QUEUE_REGION_SIZE = 0x1000
DATA_SIZE = 0x10000
#: virt_rx's input switching (sDDF's defaults: Ctrl-\ then up to 4 digits then Enter)
SWITCH_CHAR = 0x1C
TERMINATOR = 0x0D
BEGIN_STR = "Begin input\r\n"


@dataclass
class SerialQueue:
    """One serial queue: the map names of its header and data regions, its capacity (bytes), and
    the channel to the component at its other end."""

    queue: str
    data: str
    capacity: int
    channel: int

    def producer(self, name: str, regions: Mapping[str, Any]) -> SerialProducer:
        return SerialProducer(name, regions[self.queue], regions[self.data], self.capacity)

    def consumer(self, name: str, regions: Mapping[str, Any]) -> SerialConsumer:
        return SerialConsumer(name, regions[self.queue], regions[self.data], self.capacity)


@dataclass
class SerialDriverConfig:
    """The serial driver: the channel its terminal is granted on (irq source ``serial:…``), the
    queue virt_tx fills (it consumes) and, with input, the queue it fills for virt_rx."""

    device: int
    tx: SerialQueue
    rx: SerialQueue | None = None


@dataclass
class SerialClientPort:
    """What a virtualiser knows of one client: its name and its queue (tx: the client fills it;
    rx: the virtualiser fills it)."""

    name: str
    queue: SerialQueue


@dataclass
class SerialVirtTxConfig:
    """virt_tx: the driver's tx queue (it fills it), its clients' tx queues, whether each client
    gets a colour, and the begin string it writes first when input is enabled (None: no input)."""

    driver: SerialQueue
    clients: list[SerialClientPort] = field(default_factory=list)
    enable_color: bool = True
    begin_str: str | None = None


@dataclass
class SerialVirtRxConfig:
    """virt_rx: the driver's rx queue (it consumes it), its clients' rx queues, and the input
    switching: ``switch_char``, up to 4 digits of a client number, then ``terminator``."""

    driver: SerialQueue
    clients: list[SerialClientPort] = field(default_factory=list)
    switch_char: int = SWITCH_CHAR
    terminator: int = TERMINATOR


@dataclass
class SerialClientConfig:
    """A serial client's grant (its config's ``serial`` entry): the queue it writes to virt_tx
    and, with input, the queue virt_rx fills for it."""

    tx: SerialQueue
    rx: SerialQueue | None = None
