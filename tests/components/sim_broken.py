"""Components with the bugs ``sddf sim`` must find (tests/test_sim.py): the bundled pingpong's Pong
and echo server, each breaking one rule of sDDF's queues."""
from __future__ import annotations

from sddf import atomic
from sddf.apps.echo_server import EchoServer
from sddf.apps.pingpong import Pong
from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE


class NoRecheckPong(Pong):
    """Drains its queue, then requests a signal and sleeps without re-checking the queue: what
    Ping publishes in between goes unnoticed, and Ping (which saw no request) sends no signal."""

    def notified(self, ch: int) -> None:
        while descs := self.incoming.dequeue_many(64):
            self.bounce(descs)
        self.incoming.request_signal()


class NoFencePong(Pong):
    """Requests a signal, then re-checks the queue, with no fence in between: on x86 its request
    may still sit in its store buffer when Ping, having published, looks at the flag."""

    def notified(self, ch: int) -> None:
        while True:
            while descs := self.incoming.dequeue_many(64):
                self.bounce(descs)
            self.incoming.request_signal()
            if self.incoming.empty():
                return
            self.incoming.cancel_signal()


class LeakyEcho(EchoServer):
    """Forgets to give back one rx buffer: the first of the third batch it receives."""

    def setup(self) -> None:
        super().setup()
        give_back, batches = self.rx_free.enqueue_many, [0]

        def forgetful(descs: list[tuple]) -> int:
            batches[0] += 1
            return give_back(descs[1:] if batches[0] == 3 else descs)
        self.rx_free.enqueue_many = forgetful  # type: ignore[method-assign]


class ScribblingPong(Pong):
    """Once, after publishing buffers back to Ping, rewrites the first one's address in the ring: a
    producer writing a slot it has handed over."""

    scribbled = False

    def bounce(self, descs: list[tuple]) -> None:
        first = self.outgoing.index
        super().bounce(descs)
        if not self.scribbled:
            self.scribbled = True
            other = (descs[0][0] + NET_BUFFER_SIZE) % (self.config.capacity * NET_BUFFER_SIZE)
            slot = HEADER_SIZE + DESC_SIZE * (first % self.config.capacity)
            atomic.store_release_u64(atomic.pointer(self.regions["free"]), slot, other)


class OneBatchPong(Pong):
    """Bounces one batch of at most four buffers per notification and returns, neither asking to be
    woken again nor notifying itself: the rest wait in its queue for good."""

    def notified(self, ch: int) -> None:
        self.bounce(self.incoming.dequeue_many(4))
