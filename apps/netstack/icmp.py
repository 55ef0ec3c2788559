"""ICMP (RFC 792): the echo request/reply pair, the only messages this stack answers."""
from __future__ import annotations

import struct

from . import checksum

HEADER = struct.Struct("!BBH")
HEADER_LEN = 4
TYPE_ECHO_REPLY = 0
TYPE_ECHO_REQUEST = 8


def echo_reply_checksum(request_checksum: int) -> int:
    """The checksum of the reply made by turning a *verified* request's type 8 into 0.

    Only the type byte changes, so the sum drops by 0x0800 (an incremental update, RFC 1624
    in residue form: the request's residue was 0).
    """
    return checksum.field(-request_checksum - (TYPE_ECHO_REQUEST << 8))
