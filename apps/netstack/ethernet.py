"""Ethernet II framing: the 14-byte header, addresses and EtherTypes."""
from __future__ import annotations

import struct

HEADER = struct.Struct("!6s6sH")
HEADER_LEN = 14
BROADCAST = b"\xff" * 6
TYPE_IPV4 = 0x0800
TYPE_ARP = 0x0806


def parse_mac(text: str) -> bytes:
    """'02:00:00:00:00:01' -> 6 bytes."""
    mac = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if len(mac) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return mac


def is_unicast(mac: bytes) -> bool:
    """False for broadcast and multicast (group bit set) addresses."""
    return not mac[0] & 1


def header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-byte header that precedes a payload."""
    return HEADER.pack(dst, src, ethertype)
