"""What ``sddf fuzz`` makes of the fuzzer's bytes: typed values (:class:`Draw`) and Ethernet frames.

Any byte string decodes (past its end every value is 0), so the same target function serves
atheris, hypothesis and ``--replay``. Frames are mostly well formed — Ethernet, ARP, IPv4 with
ICMP, UDP or TCP, checksums right — with a drawn field here and there instead of the right one,
so a fuzzer without coverage guidance still reaches past the checksum checks.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from sddf.apps.netstack import checksum
from sddf.ppc import MESSAGE_HEADER, PPC_MAX_MRS

T = TypeVar("T")
HOST_MAC = bytes.fromhex("020000000001")  # the outside world's side of the link
HOST_IP = bytes([10, 0, 0, 1])
BROADCAST_MAC = b"\xff" * 6
MAX_FRAME = 4096  # a raw frame may be longer than a net buffer (the driver drops and counts it)
MAX_PAYLOAD = 1500
PEER_PORTS = (40000, 40001, 40002)
UDP_PORTS = (1235, 1237, 7)  # echo services, a port nothing listens on
TCP_PORTS = (1236, 1235)
TYPE_IPV4, TYPE_ARP = 0x0800, 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
TCP_FLAGS = (ACK, SYN, FIN | ACK, RST, RST | ACK, SYN | ACK)  # besides a SYN, or data, as the connection stands
IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
TCP_HEADER = struct.Struct("!HHIIBBHHH")


class Finding(Exception):
    """An invariant the target broke (any other exception escaping a target is a finding too)."""


class Draw:
    """Typed values read off fuzz bytes, in order; past the end every value is 0, and every
    choice its first (the ordinary) option."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def exhausted(self) -> bool:
        return self._at >= len(self._data)

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer at the end)."""
        out = self._data[self._at:self._at + n]
        self._at += n
        return out

    def uint(self, size: int) -> int:
        """An unsigned little-endian integer of ``size`` bytes."""
        return int.from_bytes(self.take(size), "little")

    def below(self, n: int) -> int:
        """An integer in ``[0, n)``."""
        return self.uint(1 if n <= 0x100 else 2 if n <= 0x10000 else 4) % n

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def chance(self, one_in: int) -> bool:
        """True once in ``one_in`` (never past the end)."""
        return self.below(one_in) == one_in - 1

    def maybe(self, good: T, other: Callable[[], T], one_in: int = 8) -> T:
        """``good`` mostly; once in ``one_in``, ``other()`` instead."""
        return other() if self.chance(one_in) else good

    def field(self, good: int, size: int) -> int:
        """``good`` mostly (a frame has many fields: each is wrong once in 16); now and then a drawn
        value of ``size`` bytes instead."""
        return self.maybe(good, lambda: self.uint(size), 16)

    def near(self, value: int, bits: int) -> int:
        """``value`` mostly, else a step from it or anything (modulo ``2**bits``)."""
        step = self.maybe(0, lambda: self.pick((1, -1, self.uint(bits // 8))), 4)
        return (value + step) & ((1 << bits) - 1)

    def addr(self, good: bytes) -> bytes:
        """The address ``good`` mostly, now and then drawn bytes of its length."""
        return self.maybe(good, lambda: self.take(len(good)).ljust(len(good), b"\0"), 16)


@dataclass
class TcpPeer:
    """Where the fuzzer's TCP peer stands, learnt from the segments the other side sent, so that
    drawn segments can be in sequence (a handshake, data, a close)."""

    seq: int = 0  # what the other side acknowledged last: our next sequence number
    ack: int = 0  # the other side's next sequence number
    connected: bool = False  # it answered a SYN and has not reset since

    def learn(self, frame: bytes) -> None:
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != PROTO_TCP:
            return
        ip = 14 + (frame[14] & 15) * 4
        total = int.from_bytes(frame[16:18], "big")
        if len(frame) < ip + 20:
            return
        _, _, seq, ack, offset, flags, _, _, _ = TCP_HEADER.unpack_from(frame, ip)
        data = 14 + total - ip - (offset >> 4) * 4
        if flags & ACK:
            self.seq = ack
        self.connected = flags & (SYN | ACK) == SYN | ACK or (self.connected and not flags & RST)
        self.ack = (seq + max(data, 0) + bool(flags & SYN) + bool(flags & FIN)) & 0xFFFFFFFF


def frame(draw: Draw, hosts: Sequence[tuple[bytes, bytes]], peer: TcpPeer) -> bytes:
    """An Ethernet frame to one of ``hosts`` ((mac, ipv4) pairs), or raw bytes now and then."""
    if draw.chance(16):
        return draw.take(draw.below(MAX_FRAME))
    mac, ip = draw.pick(hosts)
    dst = draw.maybe(mac, lambda: draw.pick((BROADCAST_MAC, draw.take(6).ljust(6, b"\0"))))
    src = draw.addr(HOST_MAC)
    if draw.chance(8):
        return struct.pack("!6s6sH", dst, src, draw.field(TYPE_ARP, 2)) + _arp(draw, src, ip)
    proto = draw.maybe(draw.pick((PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_ICMP)), lambda: draw.uint(1), 32)
    src_ip = draw.addr(HOST_IP)
    dst_ip = draw.maybe(ip, lambda: draw.pick((b"\xff" * 4, bytes([10, 0, 0, 255]), draw.take(4).ljust(4, b"\0"))))
    if proto == PROTO_ICMP:
        payload = _icmp(draw)
    elif proto == PROTO_UDP:
        payload = _udp(draw, src_ip, dst_ip)
    elif proto == PROTO_TCP:
        payload = _tcp(draw, src_ip, dst_ip, peer)
    else:
        payload = draw.take(draw.below(64))
    return struct.pack("!6s6sH", dst, src, draw.field(TYPE_IPV4, 2)) + _ipv4(draw, src_ip, dst_ip, proto, payload)


def _arp(draw: Draw, sha: bytes, tpa: bytes) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", draw.field(1, 2), draw.field(TYPE_IPV4, 2), draw.field(6, 1),
                       draw.field(4, 1), draw.maybe(draw.pick((1, 2)), lambda: draw.uint(2)), sha,
                       draw.addr(HOST_IP), bytes(6), tpa)


def _padded(options: bytes, pad: bytes) -> bytes:
    return options.ljust(-(-len(options) // 4) * 4, pad)


def _ipv4(draw: Draw, src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    options = _padded(draw.maybe(b"", lambda: draw.take(4 * draw.below(11))), b"\0")
    fields = [draw.field(0x45 + len(options) // 4, 1), draw.field(0, 1),
              draw.field(20 + len(options) + len(payload), 2), draw.uint(2), draw.field(0x4000, 2),
              draw.field(64, 1), proto, 0, src, dst]
    fields[7] = draw.field(checksum.checksum(IP_HEADER.pack(*fields) + options), 2)
    return IP_HEADER.pack(*fields) + options + payload


def _icmp(draw: Draw) -> bytes:
    body = struct.pack("!HH", draw.uint(2), draw.uint(2)) + draw.take(draw.below(MAX_PAYLOAD))
    kind, code = draw.maybe(8, lambda: draw.pick((0, draw.uint(1)))), draw.field(0, 1)
    return struct.pack("!BBH", kind, code, draw.field(checksum.checksum(bytes([kind, code]) + body), 2)) + body


def _udp(draw: Draw, src: bytes, dst: bytes) -> bytes:
    data = draw.take(draw.below(MAX_PAYLOAD))
    ports = (draw.field(draw.pick(PEER_PORTS), 2), draw.field(draw.pick(UDP_PORTS), 2))
    length = draw.field(8 + len(data), 2)
    good = checksum.checksum(struct.pack("!HHHH", *ports, length, 0),
                             checksum.pseudo(src, dst, PROTO_UDP, 8 + len(data)) + checksum.residue(data))
    return struct.pack("!HHHH", *ports, length, draw.maybe(good, lambda: draw.pick((0, draw.uint(2))))) + data


def _tcp(draw: Draw, src: bytes, dst: bytes, peer: TcpPeer) -> bytes:
    options = draw.maybe(b"", lambda: struct.pack("!BBH", 2, 4, draw.field(1460, 2)), 2)
    options = _padded(draw.maybe(options, lambda: draw.take(4 * draw.below(11)), 16), b"\x01")
    data = draw.maybe(b"", lambda: draw.take(draw.below(MAX_PAYLOAD)), 2)
    fields = [draw.maybe(PEER_PORTS[0], lambda: draw.pick(PEER_PORTS)), draw.field(draw.pick(TCP_PORTS), 2),
              draw.near(peer.seq, 32), draw.near(peer.ack, 32), draw.field((5 + len(options) // 4) << 4, 1),
              draw.maybe(PSH | ACK if peer.connected else SYN, lambda: draw.maybe(draw.pick(TCP_FLAGS), lambda: draw.uint(1)), 4),
              draw.field(65535, 2), 0, draw.field(0, 2)]
    segment = TCP_HEADER.pack(*fields) + options + data
    fields[7] = draw.field(checksum.checksum(segment, checksum.pseudo(src, dst, PROTO_TCP, len(segment))), 2)
    return TCP_HEADER.pack(*fields) + options + data


def ppc_message(draw: Draw) -> bytes:
    """A PPC message as a caller (or callee) writes it: a label, a register count (mostly one that
    fits) and as many registers as the bytes give."""
    count = draw.maybe(draw.below(PPC_MAX_MRS + 1), lambda: draw.uint(4))
    header = MESSAGE_HEADER.pack(draw.uint(8) - (1 << 63), count)
    return header + draw.take(8 * min(count, PPC_MAX_MRS))


def arp_answer(frame: bytes) -> bytes | None:
    """The outside world's answer to an ARP request for its address, if ``frame`` is one."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x01" or frame[38:42] != HOST_IP:
        return None
    mac, ip = frame[22:28], frame[28:32]
    return struct.pack("!6s6sHHHBBH6s4s6s4s", mac, HOST_MAC, TYPE_ARP, 1, TYPE_IPV4, 6, 4, 2, HOST_MAC, HOST_IP, mac, ip)


def icmp_echo(mac: bytes, ip: bytes, ident: int) -> bytes:
    """A well-formed ping from the outside world to (mac, ip), echo identifier ``ident``."""
    draw = Draw(b"")  # every field its right value
    payload = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"sddf fuzz"
    payload = payload[:2] + checksum.checksum(payload).to_bytes(2, "big") + payload[4:]
    return struct.pack("!6s6sH", mac, HOST_MAC, TYPE_IPV4) + _ipv4(draw, HOST_IP, ip, PROTO_ICMP, payload)


def is_echo_reply(frame: bytes, ip: bytes, ident: int) -> bool:
    """Whether ``frame`` is ``ip``'s answer to :func:`icmp_echo` with ``ident``."""
    return (len(frame) >= 42 and frame[12:14] == b"\x08\x00" and frame[23] == PROTO_ICMP and frame[26:30] == ip
            and frame[34] == 0 and int.from_bytes(frame[38:40], "big") == ident)
