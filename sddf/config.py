"""What a component is handed at start: its grants (regions, channels, irqs) and its typed config.

The monitor builds a :class:`PdConfig` for each PD, serialises it with msgpack into a memfd
passed to the PD's process, and the runtime turns it back into these dataclasses. Component
configs are dataclasses too (``Component.Config``, defined by each device class or app):
a component reads attributes, not dicts; :func:`typed` builds them, nested ones included.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from sddf.ppc import CallFds

T = TypeVar("T")
SCALARS = (int, float, str, bytes, bool)  # config field types whose values are checked


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
    ledger_fd: int = -1  # its ledger (sddf.ledger), kept across its restarts
    ledger_words: int = 0
    child_faults_fd: int = -1  # a parent PD learns of its children's faults here
    regions: dict[str, RegionGrant] = field(default_factory=dict)
    channels: dict[int, ChannelGrant] = field(default_factory=dict)
    irqs: dict[int, int] = field(default_factory=dict)  # channel id -> device fd
    app: dict[str, Any] = field(default_factory=dict)
    allow: list[str] = field(default_factory=list)  # what it may do after init (sddf.sandbox)
    memory_bytes: int | None = None  # its cap on private memory
    poll_us: int = 0  # its bounded poll before each sleep (sddf.channel.Waiter.poll_for)
    kill_at_write: int = 0  # fault injection: SIGKILL itself before this shared-memory write (sddf.faults)

    def fds(self) -> list[int]:
        """Every fd this PD must inherit."""
        out = [self.fault_fd, self.stats_fd, self.ledger_fd, self.child_faults_fd] + [r.fd for r in self.regions.values()] + list(self.irqs.values())
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
    """Build the dataclass ``cls`` from ``values`` (as they arrive from msgpack: nested dataclass
    fields, lists of them and optional ones as dicts), with an error naming ``owner`` and the field."""
    if not isinstance(values, dict):
        raise ConfigError(f"{owner}: {cls.__name__} must be a mapping, not {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{owner}: unknown config field(s) {sorted(unknown, key=repr)} for {cls.__name__}")
    try:
        return cls(**{name: _typed_value(hints[name], value, f"{owner}.{name}") for name, value in values.items()})
    except TypeError as exc:
        raise ConfigError(f"{owner}: bad config for {cls.__name__}: {exc}") from exc


def _typed_value(hint: Any, value: Any, owner: str) -> Any:
    """``value`` checked against ``hint`` and built where that is a dataclass (from a dict), a
    list or an optional one; the scalars int, float, str, bytes and bool are checked (a bool is
    no int, an int is a float); other hints are taken as they come."""
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else typed(hint, value, owner)  # type: ignore[arg-type]
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{owner} must be a list, not {type(value).__name__}")
        return [_typed_value(args[0], item, f"{owner}[{i}]") for i, item in enumerate(value)] if args else value
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _typed_union(hint, value, owner)
    if hint in SCALARS and not _is_a(value, hint):
        raise ConfigError(f"{owner} must be {hint.__name__}, not {type(value).__name__} ({value!r:.40})")
    return value


def _typed_union(hint: Any, value: Any, owner: str) -> Any:
    """:func:`_typed_value` for ``X | Y | …``: the first member ``value`` fits."""
    members = typing.get_args(hint)
    if value is None and type(None) in members:
        return None
    for member in (m for m in members if m is not type(None)):
        try:
            return _typed_value(member, value, owner)
        except ConfigError as exc:
            problem = exc
    if len(members) == 2 and type(None) in members:
        raise problem  # an optional field: its one type's complaint says it best
    raise ConfigError(f"{owner} must be {hint}, not {type(value).__name__} ({value!r:.40})")


def _is_a(value: Any, scalar: type) -> bool:
    """Whether ``value`` is of type ``scalar`` (a bool is no int; an int is a float)."""
    if isinstance(value, bool):
        return scalar is bool
    return isinstance(value, scalar) or (scalar is float and isinstance(value, int))
