"""Echo probes a user (or a test) runs against an echo system: ICMP ping, UDP echo, TCP echo.

``python -m sddf.tools.probe IP [IP …]`` runs all three against each address (from inside the
system's network namespace) and prints one JSON object per address.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import time

from sddf.apps.netstack.checksum import checksum

UDP_ECHO_PORT = 1235
TCP_ECHO_PORT = 1236


def icmp_ping(ip: str, count: int = 3, timeout: float = 1.0) -> list[float | None]:
    """Round-trip times in seconds of ``count`` ICMP echo requests (None where no reply came)."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for seq in range(count):
            payload = struct.pack("!d", time.monotonic()) + bytes(range(48))
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload
            start = time.monotonic()
            s.sendto(packet, (ip, 0))
            rtts.append(None)
            while (left := start + timeout - time.monotonic()) > 0:
                if not select.select([s], [], [], left)[0]:
                    break
                reply, (src, _) = s.recvfrom(2048)
                ihl = (reply[0] & 0xF) * 4
                rtype, _, _, rid, rseq = struct.unpack_from("!BBHHH", reply, ihl)
                if src == ip and rtype == 0 and rid == ident and rseq == seq:
                    rtts[-1] = time.monotonic() - start
                    break
    return rtts


def udp_echo(ip: str, payloads: list[bytes], port: int = UDP_ECHO_PORT, timeout: float = 1.0,
             window: int = 32) -> int:
    """Send ``payloads`` (at most ``window`` outstanding); return how many came back intact."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        expected: dict[bytes, int] = {}
        good = sent = 0
        while sent < len(payloads) or expected:
            while sent < len(payloads) and sum(expected.values()) < window:
                s.send(payloads[sent])
                expected[payloads[sent]] = expected.get(payloads[sent], 0) + 1
                sent += 1
            if not select.select([s], [], [], timeout)[0]:
                break  # the rest is lost
            data = s.recv(65536)
            if expected.get(data):
                expected[data] -= 1
                if not expected[data]:
                    del expected[data]
                good += 1
        return good


def tcp_echo(ip: str, data: bytes, port: int = TCP_ECHO_PORT, timeout: float = 10.0) -> bytes:
    """Send ``data`` over one TCP connection and return what was echoed (until close or timeout)."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.setblocking(False)
        received = bytearray()
        view, deadline = memoryview(data), time.monotonic() + timeout
        while len(received) < len(data) and time.monotonic() < deadline:
            want_write = [s] if view else []
            readable, writable, _ = select.select([s], want_write, [], 0.5)
            if writable:
                view = view[s.send(view[:65536]):]
            if readable:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        return bytes(received)


def probe(ip: str) -> dict:
    """Every probe against one echo server, as a JSON-able summary."""
    rtts = icmp_ping(ip)
    small, large = b"x", os.urandom(1472)
    burst = [i.to_bytes(4, "big") * 16 for i in range(1000)]
    blob = os.urandom(1 << 20)
    start = time.monotonic()
    echoed = tcp_echo(ip, blob)
    tcp_s = time.monotonic() - start
    return {
        "ip": ip,
        "ping_replies": sum(r is not None for r in rtts), "ping_sent": len(rtts),
        "ping_ms": [round(r * 1e3, 3) for r in rtts if r is not None],
        "udp_1B": udp_echo(ip, [small]) == 1, "udp_1472B": udp_echo(ip, [large]) == 1,
        "udp_burst_replies": udp_echo(ip, burst), "udp_burst_sent": len(burst),
        "tcp_bytes": len(blob), "tcp_intact": echoed == blob, "tcp_MBps": round(len(blob) / tcp_s / 1e6, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ips", nargs="+", metavar="IP")
    for ip in p.parse_args().ips:
        print(json.dumps(probe(ip)), flush=True)


if __name__ == "__main__":
    main()
