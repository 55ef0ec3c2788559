"""The few Ethernet frames the simulated host sends and reads: ARP, and UDP over IPv4."""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from sddf.apps.netstack.checksum import checksum

BROADCAST = b"\xff" * 6
ETH_ARP, ETH_IPV4 = 0x0806, 0x0800
ARP_REQUEST, ARP_REPLY = 1, 2
UDP = 17
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def arp(op: int, src_mac: bytes, src_ip: str, dst_mac: bytes, target_mac: bytes, target_ip: str) -> bytes:
    """An ARP frame from ``src_mac`` to ``dst_mac`` (the Ethernet destination)."""
    body = _ARP.pack(1, ETH_IPV4, 6, 4, op, src_mac, socket.inet_aton(src_ip), target_mac,
                     socket.inet_aton(target_ip))
    return dst_mac + src_mac + struct.pack("!H", ETH_ARP) + body


def udp(src_mac: bytes, src_ip: str, sport: int, dst_mac: bytes, dst_ip: str, dport: int, payload: bytes) -> bytes:
    """A UDP datagram in an IPv4 packet in an Ethernet frame, with both checksums."""
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    segment = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    check = checksum(src + dst + struct.pack("!BBH", 0, UDP, len(segment)) + segment) or 0xFFFF
    segment = segment[:6] + struct.pack("!H", check) + segment[8:]
    header = _IPV4.pack(0x45, 0, 20 + len(segment), 0, 0x4000, 64, UDP, 0, src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_IPV4) + header + segment


class Arp(NamedTuple):
    op: int
    sender_mac: bytes
    sender_ip: str
    target_ip: str


class Datagram(NamedTuple):
    src_ip: str
    sport: int
    dst_ip: str
    dport: int
    payload: bytes


def parse(frame: bytes) -> Arp | Datagram | None:
    """What an ARP or UDP/IPv4 frame says (None: any other frame)."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETH_ARP and len(frame) >= 14 + _ARP.size:
        _h, _p, _hl, _pl, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
        return Arp(op, sha, socket.inet_ntoa(spa), socket.inet_ntoa(tpa))
    if ethertype == ETH_IPV4 and len(frame) >= 14 + _IPV4.size + _UDP.size and frame[23] == UDP:
        ihl = (frame[14] & 0x0F) * 4
        sport, dport, length, _ = _UDP.unpack_from(frame, 14 + ihl)
        start = 14 + ihl + _UDP.size
        return Datagram(socket.inet_ntoa(frame[26:30]), sport, socket.inet_ntoa(frame[30:34]), dport,
                        frame[start:start + length - _UDP.size])
    return None
