"""Flood: one client writes 10 MB while another writes lines, through the real virt_tx.

Every byte of both arrives, in order per client; a batch (one colour run) is never split by the
other client's output; and each of the second client's lines reaches the driver within two
driver drains of being written (it is not stuck behind the flood).
"""
from __future__ import annotations

import re

from serial_helpers import serial_rig

FLOOD = 10 * 1024 * 1024
CHUNK = 16 * 1024
LINE_BOUND = 2  # driver drains a line may wait
RUN = re.compile(rb"\x1b\[(3\d)m(.*?)\x1b\[0m", re.S)


def test_a_flooding_client_neither_loses_bytes_nor_holds_back_another_clients_lines() -> None:
    rig = serial_rig(2, rx=False, data_size=0x10000)
    try:
        rig.output()  # the banners
        flood = bytes(range(256)) * (FLOOD // 256)
        sent = drains = 0
        screen = bytearray()
        line_written_at: dict[bytes, int] = {}
        line_seen_at: dict[bytes, int] = {}
        while sent < len(flood) or len(line_seen_at) < len(line_written_at):
            if sent < len(flood):
                n = rig.clients[0].tx.enqueue(flood[sent:sent + CHUNK])
                if n:
                    sent += n
                    rig.bench.component("client0").notify(rig.clients[0].tx_channel)
            line = f"line {drains}\n".encode()
            if drains % 7 == 0 and rig.clients[1].tx.enqueue(line) == len(line):
                line_written_at[line] = drains
                rig.bench.component("client1").notify(rig.clients[1].tx_channel)
            rig.bench.run()
            got = rig.output()
            drains += 1
            screen += got
            for written in line_written_at:
                if written not in line_seen_at and written in got:
                    line_seen_at[written] = drains
            if got:
                rig.bench.component("uart").notify(rig.driver.tx_channel)  # room made: the driver tells virt_tx
            assert drains < 10 * FLOOD // CHUNK, "the flood does not drain"
        runs: dict[bytes, bytearray] = {}
        for m in RUN.finditer(bytes(screen)):  # each client's batches, by colour (client i has colour 31+i)
            runs.setdefault(m.group(1), bytearray()).extend(m.group(2))
        assert set(runs) == {b"31", b"32"}
        assert runs[b"31"] == flood  # every byte, in order, and nothing of client1's inside its batches
        lines = bytes(runs[b"32"])
        assert lines.count(b"line ") == len(line_written_at)
        assert all(written in lines for written in line_written_at)
        delays = [line_seen_at[w] - line_written_at[w] for w in line_written_at]
        assert max(delays) <= LINE_BOUND, delays
    finally:
        rig.bench.close()
