"""A component whose Config has a field of each kind that ``sddf check`` types: scalars, lists, nesting."""
from __future__ import annotations

from dataclasses import dataclass, field

from sddf.component import Component


@dataclass
class Peer:
    """A nested config: a channel and a name."""

    channel: int
    name: str = "peer"


@dataclass
class ConfiguredConfig:
    """Every kind of field: required and defaulted scalars, a list, a nested and an optional one."""

    count: int
    ratio: float = 1.0
    label: str = "x"
    mac: bytes = b"\0" * 6
    enabled: bool = False
    ids: list[int] = field(default_factory=list)
    peer: Peer | None = None
    peers: list[Peer] = field(default_factory=list)


class Configured(Component):
    """Does nothing; exists for its Config."""

    Config = ConfiguredConfig

    def notified(self, ch: int) -> None:
        pass
