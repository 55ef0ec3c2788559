"""What a component is handed at start: its grants (regions, channels, irqs) and its typed config.

The monitor builds a :class:`PdConfig` for each PD, serialises it with msgpack into a memfd
passed to the PD's process, and the runtime turns it back into these dataclasses. Component
configs are dataclasses too (``Component.Config``): a component reads attributes, not dicts.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

import msgpack

from sddf.signal import CallFds

T = TypeVar("T")


class ConfigError(Exception):
    """A PD's configuration is malformed; the message names the PD and the field."""


@dataclass
class RegionGrant:
    """A mapped region: the fd to map, its size, whether writable, and its io address."""

    fd: int
    size: int
    writable: bool
    io_addr: int | None = None


@dataclass
class ChannelGrant:
    """One channel end: notification fds, and a PPC call path's fds if calls go over it."""

    recv_eventfd: int
    send_eventfd: int
    words_fd: int
    recv_offset: int
    send_offset: int
    peer: str
    call: CallFds | None = None    # our end of the channel's PPC path
    can_call: bool = False         # we may ppcall the peer
    serves_calls: bool = False     # the peer may ppcall us


@dataclass
class PdConfig:
    """Everything a PD process receives from the monitor."""

    name: str
    program: str
    priority: int
    cpu: int | None
    fault_fd: int
    stats_fd: int = -1
    child_faults_fd: int = -1  # a parent PD learns of its children's faults here
    regions: dict[str, RegionGrant] = field(default_factory=dict)
    channels: dict[int, ChannelGrant] = field(default_factory=dict)
    irqs: dict[int, int] = field(default_factory=dict)  # channel id -> device fd
    app: dict[str, Any] = field(default_factory=dict)

    def fds(self) -> list[int]:
        """Every fd this PD must inherit."""
        out = [self.fault_fd, self.stats_fd, self.child_faults_fd] + [r.fd for r in self.regions.values()] + list(self.irqs.values())
        for c in self.channels.values():
            out += [c.recv_eventfd, c.send_eventfd, c.words_fd]
            if c.call is not None:
                out += dataclasses.astuple(c.call)
        return sorted(set(out) - {-1})

    def pack(self) -> bytes:
        return msgpack.packb(dataclasses.asdict(self))

    @classmethod
    def unpack(cls, data: bytes) -> "PdConfig":
        raw = msgpack.unpackb(data, strict_map_key=False)
        raw["regions"] = {k: RegionGrant(**v) for k, v in raw["regions"].items()}
        raw["channels"] = {int(k): ChannelGrant(**{**v, "call": v["call"] and CallFds(**v["call"])})
                           for k, v in raw["channels"].items()}
        raw["irqs"] = {int(k): v for k, v in raw["irqs"].items()}
        return cls(**raw)

    def to_memfd(self) -> int:
        """The packed config in an inheritable-on-request memfd (the PD reads it at start)."""
        fd = os.memfd_create(f"sddf:config:{self.name}", os.MFD_CLOEXEC)
        os.write(fd, self.pack())
        os.lseek(fd, 0, os.SEEK_SET)
        return fd


def typed(cls: type[T], values: dict[str, Any], owner: str) -> T:
    """Build the dataclass ``cls`` from ``values``, with an error naming ``owner`` and the field."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{owner}: unknown config field(s) {sorted(unknown)} for {cls.__name__}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{owner}: bad config for {cls.__name__}: {exc}") from exc


# ---- component configs built by the system helpers ---------------------------------------
@dataclass
class TimerDriverConfig:
    """The timer driver: its timerfd irq channel and the channels of its clients."""

    irq: int
    clients: list[int]


@dataclass
class TimerClientConfig:
    """A timer client: the channel it calls the timer driver on (and is notified on),
    the timeouts it sets each round, and how many rounds (0: forever)."""

    timer: int
    timeouts_ns: list[int] = field(default_factory=lambda: [5_000_000, 20_000_000, 50_000_000])
    rounds: int = 0


@dataclass
class PingPongConfig:
    """One end of the ping-pong demo: the channel to its peer, the queue capacity, the buffers
    in flight (ping only) and how often to report."""

    peer: int
    capacity: int
    in_flight: int = 8
    report_every_s: float = 1.0


# ---- network ------------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        self.rx, self.tx = _as(QueuePair, self.rx), _as(QueuePair, self.tx)
        self.rx_data = _as(DataRegion, self.rx_data)
        self.tx_data = [_as(DataRegion, d) for d in self.tx_data]


@dataclass
class NetClientPort:
    """What a virtualiser knows of one client: its queue pair, MAC and (tx) data region."""

    name: str
    queues: QueuePair
    mac: bytes
    data: DataRegion | None = None

    def __post_init__(self) -> None:
        self.queues = _as(QueuePair, self.queues)
        self.data = _as(DataRegion, self.data) if self.data is not None else None


@dataclass
class NetVirtRxConfig:
    """virt_rx: the driver's rx pair, the rx data region (io address and size), and its clients."""

    driver: QueuePair
    data: DataRegion
    clients: list[NetClientPort]

    def __post_init__(self) -> None:
        self.driver, self.data = _as(QueuePair, self.driver), _as(DataRegion, self.data)
        self.clients = [_as(NetClientPort, c) for c in self.clients]


@dataclass
class NetVirtTxConfig:
    """virt_tx: the driver's tx pair and its clients (each with its own tx data region)."""

    driver: QueuePair
    clients: list[NetClientPort]
    batch: int = 32

    def __post_init__(self) -> None:
        self.driver = _as(QueuePair, self.driver)
        self.clients = [_as(NetClientPort, c) for c in self.clients]


@dataclass
class NetCopierConfig:
    """A copier: the pair with virt_rx over the shared rx data, the pair with its client over the
    client's private rx data."""

    virt: QueuePair
    virt_data: DataRegion
    client: QueuePair
    client_data: DataRegion

    def __post_init__(self) -> None:
        self.virt, self.client = _as(QueuePair, self.virt), _as(QueuePair, self.client)
        self.virt_data, self.client_data = _as(DataRegion, self.virt_data), _as(DataRegion, self.client_data)


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

    def __post_init__(self) -> None:
        self.rx, self.tx = _as(QueuePair, self.rx), _as(QueuePair, self.tx)
        self.rx_data, self.tx_data = _as(DataRegion, self.rx_data), _as(DataRegion, self.tx_data)


def _as(cls: type[T], value: Any) -> T:
    """``value`` as a ``cls`` (configs arrive from msgpack as dicts)."""
    return value if isinstance(value, cls) else typed(cls, value, cls.__name__)
