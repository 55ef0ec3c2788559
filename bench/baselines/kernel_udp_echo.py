"""The "what a user would write" UDP echo server: one kernel socket, a recvfrom/sendto loop.

    python bench/baselines/kernel_udp_echo.py [--bind 10.0.0.2] [--port 1235]

Runs until killed (SIGTERM/SIGINT). The echo benchmark runs it in its own network namespace,
reached over a veth pair, so its packets cross a real netdev like the TAP systems' do.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys


def serve(bind: str, port: int) -> None:
    """Echo every datagram back to its sender, forever."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((bind, port))
        print(f"kernel_udp_echo: listening on {bind}:{port}", flush=True)
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=1235)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(args.bind, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
