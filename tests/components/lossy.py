"""A TAP driver that loses one frame on purpose: the first TCP segment with data from port 1236."""
from __future__ import annotations

import struct

from sddf.drivers.net.tap import TapDriver

TCP_ECHO_PORT = 1236


def is_tcp_data_from(frame: bytes | memoryview, port: int) -> bool:
    """Whether frame is IPv4/TCP from source port ``port`` with a non-empty payload."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return False
    ihl = (frame[14] & 0xF) * 4
    (total,) = struct.unpack_from("!H", frame, 16)
    tcp = 14 + ihl
    if len(frame) < tcp + 13:
        return False
    (sport,) = struct.unpack_from("!H", frame, tcp)
    return sport == port and total > ihl + (frame[tcp + 12] >> 4) * 4


class DropFirstTcpData(TapDriver):
    """Drops the first echoed TCP segment (as a lossy wire would); counts it as ``test_dropped``."""

    def tx_return(self, descs: list[tuple]) -> None:
        if not self.counters["test_dropped"]:
            slot = self.tx_space.slot
            for i, (io, length, oid) in enumerate(descs):
                if is_tcp_data_from(slot(io)[:length], TCP_ECHO_PORT):
                    self.counters["test_dropped"] += 1
                    # as an empty frame the parent does not write it, but still returns its buffer
                    descs = [*descs[:i], (io, 0, oid), *descs[i + 1:]]
                    break
        super().tx_return(descs)
