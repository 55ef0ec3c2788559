"""Where every net buffer of an echo-style system on a :class:`sddf.testing.Bench` is.

Runs :class:`sddf.net.audit.Audit` over every net queue (read straight from shared memory) and
what components hold privately between handlers: the TAP driver's spare rx buffers, virt_rx's
returns waiting for room, virt_tx's returns waiting for room. A broadcast buffer rightly stands
in as many client queues as virt_rx counts references.
"""
from __future__ import annotations

from sddf.config import typed
from sddf.net.audit import Audit
from sddf.net.config import NetVirtRxConfig, NetVirtTxConfig
from sddf.testing import Bench


class NetAudit:
    """The pools of an echo system built by ``Sddf.Net`` (driver ``eth_driver``, ``net_virt_rx``,
    ``net_virt_tx``)."""

    def __init__(self, bench: Bench, driver: str = "eth_driver", virt_rx: str = "net_virt_rx",
                 virt_tx: str = "net_virt_tx") -> None:
        self.bench, self.driver, self.virt_rx, self.virt_tx = bench, driver, virt_rx, virt_tx
        pools = {q.region: q.pools for q in bench.sdf.queues}  # as each queue names its buffers
        rx = typed(NetVirtRxConfig, bench.sdf.pd(virt_rx).config, virt_rx)
        (self.rx_pool,) = pools[rx.driver.free]  # in io addresses, as virt_rx returns them to the driver
        tx = typed(NetVirtTxConfig, bench.sdf.pd(virt_tx).config, virt_tx)
        self.tx_pools = {p.name: pools[p.queues.free][0] for p in tx.clients}  # offsets, as clients name them

    def audit(self) -> Audit:
        audit = Audit()
        for q in self.bench.sdf.queues:
            if q.kind == "net" and q.pools:
                audit.add_queue(self.bench.monitor.regions[q.region].view, q.capacity, q.pools)
        components = self.bench.components
        if self.driver in components:
            audit.add(components[self.driver].spare, [self.rx_pool])
        if self.virt_rx in components:
            virt_rx = components[self.virt_rx]
            audit.add((io for io, _, _ in virt_rx.to_driver), [self.rx_pool])
            for off, count in virt_rx.refs.items():
                audit.expect(self.rx_pool[0], off, count)
        if self.virt_tx in components:
            for c in components[self.virt_tx].clients:
                audit.add((off for off, _, _ in c.returns), [self.tx_pools[c.name]])
        return audit

    def check_conservation(self) -> None:
        audit = self.audit()
        assert audit.clean, "buffers lost or duplicated: " + "; ".join(audit.problems())
