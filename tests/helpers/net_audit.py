"""Where every net buffer of an echo-style system on a :class:`sddf.testing.Bench` is.

Runs :class:`sddf.net.audit.Audit` over every net queue (read straight from shared memory) and
what the virtualisers' ledgers say they hold (read from shared memory, so a dead PD's count too),
and the TAP driver's spare rx buffers. A broadcast buffer rightly stands in as many client
places as virt_rx's word has client bits.
"""
from __future__ import annotations

from sddf.config import typed
from sddf.ledger import committed_words
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
        if self.driver in self.bench.components:
            audit.add(self.bench.components[self.driver].spare, [self.rx_pool])
        audit.add_virt_rx_words(self._words(self.virt_rx), self.rx_pool)
        audit.add_virt_tx_words(self._words(self.virt_tx), list(self.tx_pools.values()))
        return audit

    def _words(self, pd: str) -> list[int]:
        """``pd``'s ledger words as committed (read from the monitor's map: alive or not)."""
        st = self.bench.monitor.pds[pd]
        assert st.ledger is not None
        return committed_words(st.ledger.view, st.pd.ledger_words)

    def check_conservation(self) -> None:
        audit = self.audit()
        assert audit.clean, "buffers lost or duplicated: " + "; ".join(audit.problems())
