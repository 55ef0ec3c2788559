"""UDP echo on PyTCP (a TCP/IP stack in Python, GPL-3.0, used unmodified as a library) on a TAP.

    python -O bench/baselines/pytcp_echo.py --tap sddf0 [--ip 10.0.0.2/24] [--mac 02:00:00:00:00:02] [--port 1235]

PyTCP attaches to an existing TAP interface (the benchmark creates it with ``ip tuntap add``),
runs its stack in its own threads, and this program answers through PyTCP's socket API: a
recvfrom/sendto loop, as PyTCP's own UDP echo service example does. Run with ``python -O``:
PyTCP's logging calls are ``__debug__ and log(...)``, so -O removes them (its fastest setting).
PyTCP is a separate program here; nothing of it is copied into pysddf.
"""
from __future__ import annotations

import argparse
import os
import signal


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tap", required=True)
    p.add_argument("--ip", default="10.0.0.2/24")
    p.add_argument("--mac", default="02:00:00:00:00:02")
    p.add_argument("--port", type=int, default=1235)
    args = p.parse_args()

    from pytcp import TcpIpStack, config
    from pytcp.lib import socket

    config.LOG_CHANEL = set()  # quiet even without -O
    stack = TcpIpStack(interface=args.tap, mac_address=args.mac, ip4_address=args.ip)
    config.IP6_SUPPORT = False  # the benchmark is IPv4 only: skip IPv6 autoconfiguration
    stack.start()
    # PyTCP's threads are not daemons: end the whole process on SIGTERM without joining them
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sock = socket.socket(family=socket.AF_INET4, type=socket.SOCK_DGRAM)
    sock.bind((args.ip.split("/")[0], args.port))
    print(f"pytcp_echo: UDP echo on {args.ip}:{args.port} via {args.tap}", flush=True)
    try:
        while True:
            data, peer = sock.recvfrom()
            sock.sendto(data, peer)
    except KeyboardInterrupt:
        os._exit(0)


if __name__ == "__main__":
    main()
