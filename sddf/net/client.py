"""The plumbing every network client shares: rx frames in, tx frames out, through sDDF queues.

A subclass implements :meth:`NetClient.setup` (its own state, run by ``init``),
:meth:`NetClient.received` (a batch of frames as bytes) and, for channels other than its
queues' (a timer, say), :meth:`NetClient.other_notified`; it calls :meth:`NetClient.send` with
frames to transmit. Whatever a handler sends — from any channel — is on the tx queue and
notified before the handler returns; frames wait in a bounded backlog only while no tx buffer
is free (virt_tx notifies us when it returns some). Idle buffers live on the free queues, never
in the client's memory, and ``init`` re-examines the rx queue, so a restarted client drains what
arrived while it was down and finds its tx buffers where it left them. Its queue ends are tracked
by its ledger: a client killed inside a handler has published none of that handler's moves.
"""
from __future__ import annotations

from collections import deque

from sddf.component import Component
from sddf.net.config import NetClientConfig
from sddf.net.queue import BufferSpace, consuming_side, fill_free, producing_side
from sddf.queue.ring import drain
BACKLOG_MAX = 4096


class NetClient(Component):
    Config = NetClientConfig

    def init(self) -> None:
        cfg = self.config
        self.rx_space = BufferSpace([(0, self.regions[cfg.rx_data.map])])
        self.tx_space = BufferSpace([(0, self.regions[cfg.tx_data.map])])
        self.rx_free, self.rx_active = consuming_side("rx", *cfg.rx.views(self.regions),
                                                      self.rx_space, self.refuse)
        self.tx_free, self.tx_active = producing_side("tx", *cfg.tx.views(self.regions),
                                                      self.tx_space, self.refuse)
        self.ledger.track(self.rx_free, self.rx_active, self.tx_free, self.tx_active)
        self.backlog: deque[bytes] = deque()
        if cfg.owns_rx_buffers and self.ledger.fresh:  # a restart finds them in the queues
            fill_free(self.rx_free, self.rx_space.addresses()[:cfg.rx.capacity])
        self.wake_peers(cfg.rx.channel, cfg.tx.channel)
        self.setup()
        self.receive()
        self.transmit()

    def setup(self) -> None:
        """Set up the client's own state (called by ``init`` before the queues are examined)."""

    def notified(self, ch: int) -> None:
        cfg = self.config
        if ch == cfg.rx.channel:
            self.receive()
        elif ch != cfg.tx.channel:
            self.other_notified(ch)
        self.transmit()

    def other_notified(self, ch: int) -> None:
        """A channel other than the rx and tx queues' was notified (e.g. the timer's)."""
        raise NotImplementedError(f"PD {self.name!r}: no handler for channel {ch}")

    # ---- rx -------------------------------------------------------------------------------
    def receive(self) -> None:
        drain(self.rx_active, self._receive, self.config.batch)

    def _receive(self, descs: list[tuple]) -> None:
        """Hand a batch to ``received`` and send what it answers; the batch's buffers go back in
        the same commit as the answers, so a client killed in between finds the batch again and
        answers it then (each request answered once, unless no tx buffer was free)."""
        slot = self.rx_space.slot
        frames = [bytes(slot(off)[:length]) for off, length, _ in descs if length]
        self.rx_free.enqueue_many([(off, 0, oid) for off, _, oid in descs])
        self.received(frames)
        self.transmit()
        if self.rx_free.signal_needed():
            self.notify(self.config.rx.channel)

    def received(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    # ---- tx -------------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        """Queue ``frame`` for transmission (on the tx queue before this handler returns)."""
        if len(self.backlog) >= BACKLOG_MAX:
            self.counters["tx_backlog_dropped"] += 1
            return
        self.backlog.append(frame)

    def transmit(self) -> None:
        """Move the backlog onto tx active, a batch at a time, while free tx buffers last (idle
        buffers stay on the tx free queue, so a restarted client finds them there)."""
        backlog, slot = self.backlog, self.tx_space.slot
        while backlog:
            buffers = self.tx_free.dequeue_many(min(len(backlog), self.config.batch))
            if not buffers:
                if self.tx_free.request_and_recheck():
                    continue
                return  # virt_tx notifies us when it returns buffers
            out = []
            for off, _, _ in buffers:
                frame = backlog.popleft()
                slot(off)[:len(frame)] = frame
                out.append((off, len(frame), 0))
            self.tx_active.enqueue_many(out)
            if self.tx_active.signal_needed():
                self.notify(self.config.tx.channel)
