"""IPv4 (RFC 791): header layout, building headers, address conversion."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
import socket
import struct

from . import checksum

# Ethernet header and the fixed IPv4 header in one unpack (the receive fast path).
ETH_IP = struct.Struct("!6s6sHBBHHHBBH4s4s")
ETH_IP_LEN = 34
HEADER = struct.Struct("!BBHHHBBH4s4s")
MIN_HEADER_LEN = 20
BROADCAST = b"\xff\xff\xff\xff"
TTL = 64
FLAG_RESERVED = 0x8000  # "must be zero" (RFC 791), the evil bit of RFC 3514
FLAG_DF = 0x4000
FRAGMENT_MASK = 0x3FFF  # MF flag | fragment offset
# First octets of addresses no host has (RFC 1122 3.2.1.3, RFC 6890): 0/8 "this network",
# 127/8 loopback, 224/4 multicast and 240/4 reserved (255.255.255.255 included).
NOT_HOST_FIRST_OCTETS = frozenset((0, 127, *range(224, 256)))
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17


@lru_cache(maxsize=1024)  # an application sends to the few peers it heard from, datagram after datagram
def parse_addr(text: str) -> bytes:
    """'10.0.0.2' -> 4 bytes (raises ValueError on anything but a dotted quad)."""
    return ipaddress.IPv4Address(text).packed


format_addr = socket.inet_ntoa


def is_host(addr: bytes) -> bool:
    """Whether addr can be a host's: a datagram from any other source must not be answered."""
    return addr[0] not in NOT_HOST_FIRST_OCTETS


def subnet_broadcast(addr: bytes, prefix_len: int) -> bytes:
    """The directed broadcast address of addr's subnet; /31 and /32 have none (RFC 3021), for
    them this is the limited broadcast 255.255.255.255."""
    if not 0 <= prefix_len <= 32:
        raise ValueError(f"bad prefix length {prefix_len}")
    if prefix_len >= 31:
        return BROADCAST
    host_bits = (1 << (32 - prefix_len)) - 1
    return (int.from_bytes(addr, "big") | host_bits).to_bytes(4, "big")


def header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int) -> bytes:
    """A 20-byte header (no options, DF set, TTL 64) with its checksum filled in."""
    fields = [0x45, 0, MIN_HEADER_LEN + payload_len, ident, FLAG_DF, TTL, proto, 0, src, dst]
    fields[7] = checksum.checksum(HEADER.pack(*fields))
    return HEADER.pack(*fields)
