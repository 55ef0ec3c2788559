"""What the stack tells the application (returned by `NetStack.events()`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tcp import TcpConn


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """A datagram arrived on a bound (non-echo) port; broadcast: it was sent to a broadcast
    address (255.255.255.255 or the subnet's), so every host got it: do not answer it."""

    port: int
    src_ip: str
    src_port: int
    data: bytes
    broadcast: bool = False


@dataclass(frozen=True, slots=True)
class TcpAccepted:
    """A connection to a listening port completed its handshake."""

    conn: TcpConn


@dataclass(frozen=True, slots=True)
class TcpData:
    """In-order bytes from the peer."""

    conn: TcpConn
    data: bytes


@dataclass(frozen=True, slots=True)
class TcpEof:
    """The peer sent FIN: no more data will come (the connection may still send)."""

    conn: TcpConn


@dataclass(frozen=True, slots=True)
class TcpWritable:
    """The send buffer has room again after a `tcp_send` that accepted less than offered."""

    conn: TcpConn


@dataclass(frozen=True, slots=True)
class TcpClosed:
    """The connection is over for the application; the last event for `conn`.

    reason: "closed" (both FINs exchanged), "reset" (peer sent RST), "timeout"
    (retransmissions, FIN_WAIT_2 or the idle timeout ran out; a RST was sent), "evicted"
    (made room for a newer connection as the idlest one; a RST was sent) or "aborted"
    (`tcp_abort`).
    """

    conn: TcpConn
    reason: str


Event = UdpDatagram | TcpAccepted | TcpData | TcpEof | TcpWritable | TcpClosed
