"""Where every net buffer of an echo-style system is: in which queues and which component's hands.

Reads every net queue of a :class:`sddf.testing.Bench` straight from shared memory and adds
what components hold privately between handlers (the TAP driver's spare rx buffers, virt_rx's
returns waiting for room, virt_tx's returns waiting for room). :func:`check_conservation`
asserts that every buffer is in exactly one place — a broadcast buffer in as many client
queues as virt_rx counts references — and that no address outside the pools shows up.
"""
from __future__ import annotations

import struct
from collections import Counter

from sddf.config import typed
from sddf.net.config import NetVirtRxConfig, NetVirtTxConfig
from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE
from sddf.testing import Bench

Place = tuple[str, int]  # (pool, offset of the buffer in its pool's data region)


def queued(view: memoryview, capacity: int) -> list[int]:
    """The io_or_offset of each descriptor between head and tail of a net queue."""
    tail, head = struct.unpack_from("<HH", view, 0)
    return [struct.unpack_from("<Q", view, HEADER_SIZE + DESC_SIZE * ((head + i) % capacity))[0]
            for i in range((tail - head) & 0xFFFF)]


class NetAudit:
    """The pools of an echo system built by ``Sddf.Net`` (driver ``eth_driver``, ``net_virt_rx``,
    ``net_virt_tx``), named "rx" (shared), "rx:<client>" (behind a copier) and "tx:<client>"."""

    def __init__(self, bench: Bench, driver: str = "eth_driver", virt_rx: str = "net_virt_rx",
                 virt_tx: str = "net_virt_tx") -> None:
        self.bench, self.driver, self.virt_rx, self.virt_tx = bench, driver, virt_rx, virt_tx
        rx_cfg = typed(NetVirtRxConfig, bench.sdf.pd(virt_rx).config, virt_rx)
        tx_cfg = typed(NetVirtTxConfig, bench.sdf.pd(virt_tx).config, virt_tx)
        self.rx_io = rx_cfg.data.io_addr
        self.rx_buffers = rx_cfg.data.size // NET_BUFFER_SIZE
        self.tx_io = {p.name: (p.data.io_addr, p.data.size) for p in tx_cfg.clients}  # type: ignore[union-attr]
        copiers = {pd.name for pd in bench.sdf.pds if pd.program.endswith(":NetCopier")}
        self.copied = {pd.name[:-len("_copier")] for pd in bench.sdf.pds if pd.name in copiers}
        self.queues = [(q.region, q.capacity) for q in bench.sdf.queues if q.kind == "net"]
        self.receivers = copiers | (set(self.tx_io) - self.copied)  # who shares the rx pool with virt_rx

    def _tx_place(self, io: int) -> Place:
        for client, (base, size) in self.tx_io.items():
            if base <= io < base + size:
                return f"tx:{client}", io - base
        raise AssertionError(f"the driver's tx queues hold {io:#x}, in no client's tx region")

    def _place(self, region: str, address: int) -> Place:
        if region.startswith("net_drv_rx_"):
            return "rx", address - self.rx_io
        if region.startswith("net_drv_tx_"):
            return self._tx_place(address)
        if region.startswith("net_tx_"):
            return f"tx:{region[len('net_tx_'):].rsplit('_', 1)[0]}", address
        owner = region[len("net_rx_"):].rsplit("_", 1)[0]
        return ("rx" if owner in self.receivers else f"rx:{owner}"), address

    def places(self) -> Counter[Place]:
        """How many times each buffer appears in queues and private hands."""
        seen: Counter[Place] = Counter()
        for region, capacity in self.queues:
            for address in queued(self.bench.monitor.regions[region].view, capacity):
                seen[self._place(region, address)] += 1
        components = self.bench.components
        if self.driver in components:
            seen.update(("rx", io - self.rx_io) for io in components[self.driver].spare)
        if self.virt_rx in components:
            seen.update(("rx", io - self.rx_io) for io, _, _ in components[self.virt_rx].to_driver)
        if self.virt_tx in components:
            for c in components[self.virt_tx].clients:
                seen.update((f"tx:{c.name}", off) for off, _, _ in c.returns)
        return seen

    def expected(self) -> Counter[Place]:
        """Every buffer once, a broadcast buffer as often as virt_rx counts its references."""
        want: Counter[Place] = Counter({("rx", i * NET_BUFFER_SIZE): 1 for i in range(self.rx_buffers)})
        refs = self.bench.components[self.virt_rx].refs if self.virt_rx in self.bench.components else {}
        for off, count in refs.items():
            want[("rx", off)] = count
        for client, (_, size) in self.tx_io.items():
            want.update({(f"tx:{client}", i * NET_BUFFER_SIZE): 1 for i in range(size // NET_BUFFER_SIZE)})
        for client in self.copied:
            want.update({(f"rx:{client}", i * NET_BUFFER_SIZE): 1 for i in range(self.rx_buffers)})
        return want

    def check_conservation(self) -> None:
        seen, want = self.places(), self.expected()
        if seen != want:
            lost = sorted((want - seen).items())[:8]
            extra = sorted((seen - want).items())[:8]
            raise AssertionError(f"buffers lost or duplicated: missing {lost}, extra {extra}")
