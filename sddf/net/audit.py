"""Buffer conservation: is every buffer of every pool in exactly one place?

Sans-I/O: the caller hands in each net queue's bytes with the pools its descriptors name
(:class:`sddf.system.QueueInfo.pools`), and what components hold privately if it knows; the
audit reads the descriptors between head and tail and says, per pool, which buffers are
nowhere (missing: in flight through a handler, or lost) and which are in two places at once
(doubled), and what names no buffer of the pool (foreign). ``sddf audit`` runs it on a running
system; the test bench runs it after every step.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE
from sddf.net.words import RX_PENDING, TX_RETURNING

Pools = Sequence[Sequence[Any]]  # ((pool, base, size), …) as QueueInfo.pools, or lists from JSON
_INDICES = struct.Struct("<HH")
_ADDRESS = struct.Struct("<Q")


@dataclass
class PoolReport:
    """Where one pool's buffers were seen (by offset in the pool)."""

    name: str
    buffers: int
    seen: Counter[int] = field(default_factory=Counter)
    foreign: list[int] = field(default_factory=list)  # addresses in its queues that are no buffer of it

    @property
    def missing(self) -> list[int]:
        return [off for off in range(0, self.buffers * NET_BUFFER_SIZE, NET_BUFFER_SIZE) if off not in self.seen]

    @property
    def doubled(self) -> list[int]:
        return sorted(off for off, count in self.seen.items() if count > 1)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.doubled or self.foreign)


def queued(view: Any, capacity: int) -> list[int]:
    """The io_or_offset of each descriptor between head and tail of a net queue's bytes."""
    tail, head = _INDICES.unpack_from(view, 0)
    return [_ADDRESS.unpack_from(view, HEADER_SIZE + DESC_SIZE * ((head + i) % capacity))[0]
            for i in range(min((tail - head) & 0xFFFF, capacity))]


class Audit:
    """Collects where buffers are; :attr:`pools` holds a :class:`PoolReport` per pool seen."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolReport] = {}

    def add(self, addresses: Iterable[int], pools: Pools) -> None:
        """Count ``addresses`` (as a queue or a component names buffers of ``pools``)."""
        spans = [(self._pool(name, size), base, size) for name, base, size in pools]
        for address in addresses:
            for report, base, size in spans:
                if base <= address < base + size and (address - base) % NET_BUFFER_SIZE == 0:
                    report.seen[address - base] += 1
                    break
            else:
                spans[0][0].foreign.append(address)

    def add_queue(self, view: Any, capacity: int, pools: Pools) -> None:
        self.add(queued(view, capacity), pools)

    def expect(self, pool: str, offset: int, count: int) -> None:
        """``pool``'s buffer at ``offset`` rightly stands in ``count`` places (a broadcast frame's)."""
        report = self.pools[pool]
        if report.seen[offset] == count:
            report.seen[offset] = 1

    def add_virt_rx_words(self, words: Sequence[int], pool: Sequence[Any]) -> None:
        """Read virt_rx's ledger words for the rx ``pool`` (as the driver names it): a buffer it
        holds for the driver counts once, a buffer clients hold stands in a place per client."""
        name, base, _size = pool
        self.add((base + i * NET_BUFFER_SIZE for i, w in enumerate(words) if w & RX_PENDING), [pool])
        for i, w in enumerate(words):
            if w and not w & RX_PENDING:
                self.expect(name, i * NET_BUFFER_SIZE, w.bit_count())

    def add_virt_tx_words(self, words: Sequence[int], pools: Sequence[Sequence[Any]]) -> None:
        """Read virt_tx's ledger words for the client tx ``pools`` (in client order, as clients
        name their buffers): a buffer waiting for room on its client's free queue counts once."""
        first = 0
        for pool in pools:
            count = pool[2] // NET_BUFFER_SIZE
            self.add((pool[1] + i * NET_BUFFER_SIZE for i in range(count) if words[first + i] == TX_RETURNING), [pool])
            first += count

    def _pool(self, name: str, size: int) -> PoolReport:
        report = self.pools.get(name)
        if report is None:
            report = self.pools[name] = PoolReport(name, size // NET_BUFFER_SIZE)
        return report

    @property
    def clean(self) -> bool:
        return all(report.clean for report in self.pools.values())

    def problems(self) -> list[str]:
        """One line per pool that is not clean."""
        return [f"pool {r.name}: {len(r.missing)} missing {some(r.missing)}, {len(r.doubled)} doubled "
                f"{some(r.doubled)}, {len(r.foreign)} foreign {some(r.foreign)}"
                for r in self.pools.values() if not r.clean]


def some(offsets: list[int], shown: int = 6) -> str:
    """A few of ``offsets``, in hex."""
    return "[" + ", ".join(f"{o:#x}" for o in offsets[:shown]) + (", …]" if len(offsets) > shown else "]")
