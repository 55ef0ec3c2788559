"""A net client that attacks its virtualisers with garbage descriptors and a jumping index."""
from __future__ import annotations

from sddf import atomic
from sddf.net.client import NetClient
from sddf.net.queue import NET_BUFFER_SIZE, NetBuffDesc


class GarbageClient(NetClient):
    """Sends virt_tx and virt_rx every kind of bad descriptor once, then breaks its tx index."""

    kind = "net.client"

    def setup(self) -> None:
        self.jumped = False
        region = len(self.regions[self.config.tx_data.map])
        bad_tx = [
            NetBuffDesc(region + NET_BUFFER_SIZE, 60),   # outside its tx region
            NetBuffDesc(1, 60),                          # not the start of a buffer
            NetBuffDesc(0, 0),                           # empty frame
            NetBuffDesc(NET_BUFFER_SIZE, 5000),          # longer than a buffer
            NetBuffDesc(2 * NET_BUFFER_SIZE, 60),        # fine once…
            NetBuffDesc(2 * NET_BUFFER_SIZE, 60),        # …but not again while in flight
        ]
        self.tx_active.enqueue_many(bad_tx)
        bad_rx = [NetBuffDesc(10 ** 9), NetBuffDesc(0), NetBuffDesc(NET_BUFFER_SIZE)]  # none of them held
        self.rx_free.enqueue_many(bad_rx)
        self.notify(self.config.tx.channel)
        self.notify(self.config.rx.channel)
        self.log(f"sent {len(bad_tx)} bad tx and {len(bad_rx)} bad rx descriptors")

    def received(self, frames: list[bytes]) -> None:
        # once virt_tx has taken the bad descriptors, move the tx tail far past anything it could own
        if not self.jumped and self.tx_active.empty():
            ptr = atomic.pointer(self.regions[self.config.tx.active])
            atomic.store_release_u16(ptr, 0, (atomic.load_acquire_u16(ptr, 0) + 20000) & 0xFFFF)
            self.notify(self.config.tx.channel)
            self.jumped = True
            self.log("moved its tx tail by 20000")
