"""What a component is handed at start: its grants (regions, channels, irqs) and its typed config.

The monitor builds a :class:`PdConfig` for each PD, serialises it with msgpack into a memfd
passed to the PD's process, and the runtime turns it back into these dataclasses. Component
configs are dataclasses too (``Component.Config``): a component reads attributes, not dicts.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

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
    """One channel end: notification fds, and a PPC socket if calls go over it."""

    recv_eventfd: int
    send_eventfd: int
    words_fd: int
    recv_offset: int
    send_offset: int
    peer: str
    ppc_fd: int | None = None      # our end of the PPC socket
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
    regions: dict[str, RegionGrant] = field(default_factory=dict)
    channels: dict[int, ChannelGrant] = field(default_factory=dict)
    irqs: dict[int, int] = field(default_factory=dict)  # channel id -> device fd
    app: dict[str, Any] = field(default_factory=dict)

    def fds(self) -> list[int]:
        """Every fd this PD must inherit."""
        out = [self.fault_fd] + [r.fd for r in self.regions.values()] + list(self.irqs.values())
        for c in self.channels.values():
            out += [c.recv_eventfd, c.send_eventfd, c.words_fd]
            if c.ppc_fd is not None:
                out.append(c.ppc_fd)
        return sorted(set(out))

    def pack(self) -> bytes:
        return msgpack.packb(dataclasses.asdict(self))

    @classmethod
    def unpack(cls, data: bytes) -> "PdConfig":
        raw = msgpack.unpackb(data, strict_map_key=False)
        raw["regions"] = {k: RegionGrant(**v) for k, v in raw["regions"].items()}
        raw["channels"] = {int(k): ChannelGrant(**v) for k, v in raw["channels"].items()}
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
