"""Building and checking Ethernet/ARP/IPv4/ICMP/UDP/TCP frames independently of
sddf.apps.netstack (its own RFC 1071 checksum loop), for the netstack tests."""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

HOST_MAC = bytes.fromhex("020000000001")
STACK_MAC = bytes.fromhex("020000000002")
HOST_IP = "10.0.0.1"
STACK_IP = "10.0.0.2"
BROADCAST_MAC = b"\xff" * 6
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def inet_checksum(data: bytes) -> int:
    """RFC 1071 section 4.1, word by word."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum_ok(data: bytes) -> bool:
    """A block with its checksum field filled in sums to 0xFFFF (complement 0)."""
    return inet_checksum(data) == 0


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)


def ethernet(payload: bytes, *, dst: bytes = STACK_MAC, src: bytes = HOST_MAC,
             ethertype: int = 0x0800) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op: int, *, sha: bytes = HOST_MAC, spa: str = HOST_IP, tha: bytes = b"\0" * 6,
        tpa: str = STACK_IP) -> bytes:
    """An ARP packet (no Ethernet header)."""
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, socket.inet_aton(spa), tha,
                       socket.inet_aton(tpa))


def ipv4(payload: bytes, proto: int, *, src: str = HOST_IP, dst: str = STACK_IP, ttl: int = 64,
         ident: int = 1, flags_frag: int = 0x4000, options: bytes = b"", tos: int = 0) -> bytes:
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident,
                         flags_frag, ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    header += options
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + payload


def udp(data: bytes, sport: int, dport: int, *, src: str = HOST_IP, dst: str = STACK_IP,
        with_checksum: bool = True) -> bytes:
    length = 8 + len(data)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + data
    if with_checksum:
        ck = inet_checksum(_pseudo(src, dst, 17, length) + seg) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", ck) + seg[8:]
    return seg


def icmp_echo(ident: int, seq: int, data: bytes, *, kind: int = 8) -> bytes:
    msg = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", inet_checksum(msg)) + msg[4:]


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, *, window: int = 65535,
        data: bytes = b"", options: bytes = b"", src: str = HOST_IP, dst: str = STACK_IP) -> bytes:
    options += b"\0" * (-len(options) % 4)
    off = (5 + len(options) // 4) << 12
    seg = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      off | flags, window, 0, 0) + options + data
    ck = inet_checksum(_pseudo(src, dst, 6, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", ck) + seg[18:]


def udp_frame(data: bytes, sport: int = 40000, dport: int = 1235, **kw: object) -> bytes:
    return ethernet(ipv4(udp(data, sport, dport), 17, **kw))  # type: ignore[arg-type]


def icmp_frame(data: bytes = b"ping", ident: int = 7, seq: int = 1) -> bytes:
    return ethernet(ipv4(icmp_echo(ident, seq, data), 1))


@dataclass
class Frame:
    """A frame the stack sent, parsed and checksum-verified (raises AssertionError if bad)."""

    eth_dst: bytes
    eth_src: bytes
    ethertype: int
    ip_src: str = ""
    ip_dst: str = ""
    ttl: int = 0
    proto: int = 0
    l4: bytes = b""  # the transport header + payload
    arp: tuple = ()

    @property
    def ports(self) -> tuple[int, int]:
        return struct.unpack_from("!HH", self.l4)

    @property
    def udp_data(self) -> bytes:
        return self.l4[8:]

    @property
    def tcp(self) -> tuple[int, int, int, int]:
        """(seq, ack, flags, window)"""
        seq, ack, off_flags, window = struct.unpack_from("!IIHH", self.l4, 4)
        return seq, ack, off_flags & 0x3F, window

    @property
    def tcp_data(self) -> bytes:
        return self.l4[(self.l4[12] >> 4) * 4:]

    @property
    def tcp_options(self) -> bytes:
        return self.l4[20:(self.l4[12] >> 4) * 4]


def parse(frame: bytes) -> Frame:
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    f = Frame(dst, src, ethertype)
    if ethertype == 0x0806:
        f.arp = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
        return f
    assert ethertype == 0x0800
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    assert ip[0] >> 4 == 4 and ihl >= 20
    total = struct.unpack_from("!H", ip, 2)[0]
    assert total == len(ip), "IP total length must match the frame"
    assert checksum_ok(ip[:ihl]), "bad IP header checksum"
    assert struct.unpack_from("!H", ip, 6)[0] & 0x3FFF == 0, "we never fragment"
    assert not struct.unpack_from("!H", ip, 6)[0] & 0x8000, "the reserved flag must be zero"
    f.ttl, f.proto = ip[8], ip[9]
    f.ip_src, f.ip_dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    f.l4 = ip[ihl:total]
    if f.proto == 1:
        assert checksum_ok(f.l4), "bad ICMP checksum"
    elif f.proto in (6, 17):
        if f.proto == 17:
            assert struct.unpack_from("!H", f.l4, 4)[0] == len(f.l4)
        if f.proto == 6 or struct.unpack_from("!H", f.l4, 6)[0]:
            pseudo = _pseudo(f.ip_src, f.ip_dst, f.proto, len(f.l4))
            assert checksum_ok(pseudo + f.l4), f"bad checksum (protocol {f.proto})"
    return f
