"""Echo server client: ping, UDP echo on port 1235 and TCP echo on port 1236 (like sDDF's echo_server).

Runs its own sans-I/O IPv4 stack (``sddf.apps.netstack``) over the client queues and answers
UDP echo as an application over the stack's UDP events; :class:`InStackEchoServer` lets the
stack reflect UDP echo requests itself (a benchmark's comparison point, not an application).
TCP timers come from the timer driver (SET_TIMEOUT over PPC, notification when due).
"""
from __future__ import annotations

import time

from sddf.net.client import NetClient
from sddf.apps.netstack import EchoService, NetStack
from sddf.timer.client import set_timeout

UDP_ECHO_PORT = 1235
TCP_ECHO_PORT = 1236


class EchoServer(NetClient):
    kind = "net.client"
    #: UDP echo answered inside the stack instead of by the application
    udp_in_stack = False

    def setup(self) -> None:
        self.stack = NetStack(mac=self.config.mac, ip=self.config.ip)
        self.stack.counters.update(self.counters)
        self.counters = self.stack.counters  # the stack's drop counters are published with ours
        self.echo = EchoService(self.stack, udp_port=UDP_ECHO_PORT, tcp_port=TCP_ECHO_PORT,
                                udp_in_stack=self.udp_in_stack)
        self.timer_due: int | None = None
        self.log(f"echo server on {self.config.ip} ({self.config.mac.hex(':')}): "
                 f"UDP {UDP_ECHO_PORT}, TCP {TCP_ECHO_PORT}, ping")

    def other_notified(self, ch: int) -> None:
        if ch != self.config.timer:
            super().other_notified(ch)
        self.timer_due = None
        now = time.monotonic_ns()
        self.stack.on_timer(now)
        self._pump(now)  # retransmissions, probes and ARP retries are sent before we return

    def received(self, frames: list[bytes]) -> None:
        now = time.monotonic_ns()
        receive = self.stack.receive
        for frame in frames:
            receive(frame, now)
        self._pump(now)

    def _pump(self, now: int) -> None:
        stack = self.stack
        self.echo.handle(stack.events())
        for frame in stack.take_frames():
            self.send(frame)
        due = stack.next_timer_ns()
        if due is not None and self.config.timer is not None and (self.timer_due is None or due < self.timer_due):
            set_timeout(self, self.config.timer, max(0, due - now))
            self.timer_due = due


class InStackEchoServer(EchoServer):
    """The echo server with UDP echo reflected inside the stack (no UDP events, no application)."""

    udp_in_stack = True
