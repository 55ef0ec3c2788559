"""EchoService: UDP and TCP echo on a NetStack, with backpressure.

UDP echo is an application: each UdpDatagram event is sent back with `udp_send`, as sDDF's
echo server answers through lwIP's UDP API, unless the stack's echo rule refuses it
(`NetStack.udp_echo_allowed`: not to a broadcast, nor to port 0 or another echo port, nor
beyond the MTU). With
`udp_in_stack=True` the stack itself reflects UDP echo requests (`udp_bind(port, echo=True)`:
no events, no application). TCP echo sends back what arrives; bytes the send buffer cannot
take wait here while the connection's receive window is paused, so a peer that does not read
cannot make the echo server grow without bound: what waits here for a connection plus its
send buffer stays within `send_buffer` + `receive_window` bytes (TcpConfig; 128 KiB by
default), as the stack takes no data beyond the window it advertised. When the peer closes
its side, the connection is closed once everything is echoed.
"""
from __future__ import annotations

from collections.abc import Iterable

from .events import Event, TcpClosed, TcpData, TcpEof, TcpWritable, UdpDatagram
from .stack import NetStack
from .tcp import TcpConn


class EchoService:
    """Feed it the stack's events; it answers through the stack."""

    def __init__(self, stack: NetStack, *, udp_port: int | None = None,
                 tcp_port: int | None = None, udp_in_stack: bool = False) -> None:
        self.stack = stack
        if udp_port is not None:
            stack.udp_bind(udp_port, echo=udp_in_stack)
        if tcp_port is not None:
            stack.tcp_listen(tcp_port)
        self._backlog: dict[TcpConn, bytes] = {}
        self._peer_done: set[TcpConn] = set()

    def handle(self, events: Iterable[Event]) -> None:
        """React to a batch of events from `stack.events()`."""
        for event in events:
            if isinstance(event, UdpDatagram):
                if self.stack.udp_echo_allowed(event):
                    self.stack.udp_send(event.port, event.src_ip, event.src_port, event.data)
            elif isinstance(event, TcpData):
                self._echo(event.conn, event.data)
            elif isinstance(event, TcpWritable):
                self._echo(event.conn, b"")
            elif isinstance(event, TcpEof):
                self._peer_done.add(event.conn)
                if event.conn not in self._backlog:
                    self.stack.tcp_close(event.conn)
            elif isinstance(event, TcpClosed):
                self._backlog.pop(event.conn, None)
                self._peer_done.discard(event.conn)

    def _echo(self, conn: TcpConn, data: bytes) -> None:
        waiting = self._backlog.pop(conn, b"")
        if waiting:
            data = waiting + data
        sent = self.stack.tcp_send(conn, data)
        if sent < len(data):
            self._backlog[conn] = data[sent:]
            self.stack.tcp_pause_receive(conn, True)
        else:
            self.stack.tcp_pause_receive(conn, False)
            if conn in self._peer_done:
                self.stack.tcp_close(conn)
