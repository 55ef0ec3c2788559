"""Deliberately broken components, for ``sddf fuzz``'s tests.

:class:`TrustingConsumer` trusts its peer's descriptors: its queue end accepts any address
(``buffers=None``), and it counts frames per buffer in a list indexed by the address a descriptor
names, unchecked, so a peer naming an address past the data region makes it raise IndexError
(``fuzz_broken_system.py`` wires it to a producer). :class:`StrictConsumer` only refuses;
:class:`Hoarder` keeps more with every notification; :class:`LeakyCopier` never gives the shared rx buffers it copied from back to virt_rx.
"""
from __future__ import annotations

from dataclasses import dataclass

from sddf.component import Component
from sddf.net.queue import NET_BUFFER_SIZE, NetConsumer
from sddf.virtualisers.net.copy import NetCopier

BUFFERS = 8
HOARD = 5000  # entries a Hoarder keeps per notification


@dataclass
class TrustingConfig:
    queue: str      # the map name of the queue it consumes
    capacity: int


class TrustingConsumer(Component):
    kind = "test.trusting"
    Config = TrustingConfig

    def init(self) -> None:
        self.queue = NetConsumer("in", self.regions[self.config.queue], self.config.capacity, on_refuse=self.refuse)
        self.frames = [0] * BUFFERS

    def notified(self, ch: int) -> None:
        for address, _length, _oid in self.queue.dequeue_many():
            self.frames[address // NET_BUFFER_SIZE] += 1  # the bug: the peer's address indexes a list


class StrictConsumer(TrustingConsumer):
    """Its queue end reports to nobody, so a peer's broken index raises QueueProtocolError: a
    refusal sDDF documents, which faults the PD (the monitor restarts it), not a finding."""

    def init(self) -> None:
        super().init()
        self.queue.on_refuse = None


class Hoarder(TrustingConsumer):
    def notified(self, ch: int) -> None:
        self.frames.extend([0] * HOARD)


class Idle(Component):
    """The producer's place: the fuzzer plays it."""

    kind = "test.idle"

    def notified(self, ch: int) -> None:
        pass


class LeakyCopier(NetCopier):
    def _copy(self, frames: list[tuple]) -> None:
        self.virt_free.enqueue_many = lambda entries: len(entries)  # type: ignore[method-assign]
        super()._copy(frames)
