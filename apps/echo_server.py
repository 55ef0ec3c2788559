"""Echo server client: ping, UDP echo on port 1235 and TCP echo on port 1236 (like sDDF's echo_server).

Runs its own sans-I/O IPv4 stack (``sddf.apps.netstack``) over the client queues; TCP timers
come from the timer driver (SET_TIMEOUT over PPC, notification when due).
"""
from __future__ import annotations

import time

from sddf.apps.net_client import NetClient
from sddf.apps.netstack import NetStack, TcpClosed, TcpData, UdpDatagram
from sddf.timer import set_timeout

UDP_ECHO_PORT = 1235
TCP_ECHO_PORT = 1236


class EchoServer(NetClient):
    kind = "net.client"

    def init(self) -> None:
        super().init()
        self.stack = NetStack(mac=self.config.mac, ip=self.config.ip)
        self.stack.udp_bind(UDP_ECHO_PORT)
        self.stack.tcp_listen(TCP_ECHO_PORT)
        self.unsent: dict[object, bytes] = {}  # TCP echo data the peer's window did not take yet
        self.timer_due: int | None = None
        print(f"{self.name}: echo server on {self.config.ip} ({self.config.mac.hex(':')}): "
              f"UDP {UDP_ECHO_PORT}, TCP {TCP_ECHO_PORT}, ping", flush=True)

    def notified(self, ch: int) -> None:
        if ch == self.config.timer:
            self.timer_due = None
            now = time.monotonic_ns()
            self.stack.on_timer(now)
            self._pump(now)
        else:
            super().notified(ch)

    def received(self, frames: list[bytes]) -> None:
        now = time.monotonic_ns()
        for frame in frames:
            self.stack.receive(frame, now)
        self._pump(now)

    def _pump(self, now: int) -> None:
        stack = self.stack
        for event in stack.events():
            if isinstance(event, UdpDatagram):
                stack.udp_send(event.port, event.src_ip, event.src_port, event.data)
            elif isinstance(event, TcpData):
                self._echo(event.conn, self.unsent.pop(event.conn, b"") + event.data)
            elif isinstance(event, TcpClosed):
                self.unsent.pop(event.conn, None)
        for conn, data in list(self.unsent.items()):  # the window may have opened
            del self.unsent[conn]
            self._echo(conn, data)
        for frame in stack.take_frames():
            self.send(frame)
        due = stack.next_timer_ns()
        if due is not None and self.config.timer is not None and (self.timer_due is None or due < self.timer_due):
            set_timeout(self, self.config.timer, max(0, due - now))
            self.timer_due = due

    def _echo(self, conn: object, data: bytes) -> None:
        taken = self.stack.tcp_send(conn, data)
        if taken < len(data):
            self.unsent[conn] = data[taken:]
