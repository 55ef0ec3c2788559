"""UDP (RFC 768): header layout and datagram building."""
from __future__ import annotations

import struct

from . import checksum, ipv4

HEADER = struct.Struct("!HHHH")
HEADER_LEN = 8


def header(src_ip: bytes, dst_ip: bytes, src_port: int, dst_port: int, data: bytes) -> bytes:
    """The 8-byte header for data, with its checksum (pseudo-header included)."""
    length = HEADER_LEN + len(data)
    initial = checksum.pseudo(src_ip, dst_ip, ipv4.PROTO_UDP, length) + checksum.residue(data)
    partial = HEADER.pack(src_port, dst_port, length, 0)
    return HEADER.pack(src_port, dst_port, length, checksum.checksum(partial, initial))
