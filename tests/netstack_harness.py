"""Real-peer harness for sddf.apps.netstack, run inside a network namespace by
tests/test_netstack_tap.py (as root).

    python netstack_harness.py serve [--loss P]  # TAP 10.0.0.1/24 <-> NetStack 10.0.0.2 echo
    python netstack_harness.py CHECK             # a client check: ping, udp, tcp, tcp3

`serve` prints "ready" once the TAP device is up, then loops TAP <-> NetStack (UDP echo on
1235, TCP echo on 1236) until its stdin closes, SIGTERM, or --max-seconds; it prints the
stack's drop counters as JSON on exit. A client check exits 0 on success and prints what it
measured as JSON.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from helpers.netframes import inet_checksum
from sddf.apps.netstack import EchoService, NetStack

TAP_NAME = "sddftap0"
HOST_IP = "10.0.0.1"
STACK_IP = "10.0.0.2"
STACK_MAC = "02:00:00:00:00:02"
UDP_PORT = 1235
TCP_PORT = 1236
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
READ_BATCH = 64
CLIENT_TIMEOUT_S = 20.0


def open_tap(name: str) -> int:
    """Create TAP device name, give it HOST_IP/24 and bring it up; returns its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    for cmd in (["ip", "addr", "add", f"{HOST_IP}/24", "dev", name],
                ["ip", "link", "set", "dev", name, "up"]):
        subprocess.run(cmd, check=True)
    return fd


def serve(max_seconds: float, loss: float) -> None:
    """The echo server loop: frames from the TAP into the stack, its frames back out.

    With loss > 0, that fraction of the frames is dropped in each direction (seeded, so a
    failure can be replayed): retransmission on both sides then has to do its job.
    """
    lose = random.Random(0x5DDF).random if loss else lambda: 1.0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fd = open_tap(TAP_NAME)
    stack = NetStack(STACK_MAC, STACK_IP)
    echo = EchoService(stack, udp_port=UDP_PORT, tcp_port=TCP_PORT)
    deadline = time.monotonic() + max_seconds
    print("ready", flush=True)
    while not stop.is_set() and time.monotonic() < deadline:
        next_timer = stack.next_timer_ns()
        timeout = 0.5 if next_timer is None else \
            min(0.5, max(0.0, (next_timer - time.monotonic_ns()) / 1e9))
        readable, _, _ = select.select([fd, sys.stdin], [], [], timeout)
        if sys.stdin in readable and not sys.stdin.buffer.read1(1):
            break  # the test that started us is gone
        now = time.monotonic_ns()
        for _ in range(READ_BATCH if fd in readable else 0):
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                break
            if lose() >= loss:
                stack.receive(frame, now)
        stack.on_timer(now)
        echo.handle(stack.events())
        for frame in stack.take_frames():
            if lose() < loss:
                continue
            try:
                os.write(fd, frame)
            except BlockingIOError:
                stack.counters["harness_tx_busy"] += 1
    os.close(fd)
    print(json.dumps(dict(stack.counters)), flush=True)


def check_ping() -> dict:
    """ping -c 3 if installed, else three echo requests on a raw ICMP socket."""
    if shutil.which("ping"):
        out = subprocess.run(["ping", "-c", "3", "-W", "2", STACK_IP], capture_output=True,
                             text=True, timeout=CLIENT_TIMEOUT_S)
        assert out.returncode == 0, out.stdout + out.stderr
        return {"tool": "ping", "output": out.stdout.splitlines()[-2:]}
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(2.0)
        for seq in range(1, 4):
            payload = os.urandom(56)
            body = struct.pack("!HH", 0x5DDF, seq) + payload
            sock.sendto(struct.pack("!BBH", 8, 0, inet_checksum(b"\x08\0\0\0" + body)) + body,
                        (STACK_IP, 0))
            while True:
                packet = sock.recv(2048)
                icmp = packet[(packet[0] & 15) * 4:]
                if icmp[0] == 0 and icmp[4:] == body:
                    assert inet_checksum(icmp) == 0, "bad reply checksum"
                    break
    return {"tool": "raw socket", "replies": 3}


def check_udp() -> dict:
    """Echo of 1 and 1472 bytes (the largest unfragmented datagram at MTU 1500)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        for size in (1, 1472):
            payload = os.urandom(size)
            for _attempt in range(3):
                sock.sendto(payload, (STACK_IP, UDP_PORT))
                try:
                    data, peer = sock.recvfrom(2048)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError(f"no UDP echo of {size} bytes")
            assert data == payload and peer == (STACK_IP, UDP_PORT)
    return {"sizes": [1, 1472]}


def tcp_echo(size: int) -> float:
    """Send size random bytes, read the echo back byte-for-byte, expect the server's FIN."""
    payload = os.urandom(size)
    received = bytearray()
    start = time.monotonic()
    with socket.create_connection((STACK_IP, TCP_PORT), timeout=CLIENT_TIMEOUT_S) as sock:
        def send_all() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        while chunk := sock.recv(65536):
            received += chunk
        sender.join(CLIENT_TIMEOUT_S)
    assert len(received) == size, f"echoed {len(received)} of {size} bytes"
    assert received == payload, "echo differs"
    return time.monotonic() - start


def check_tcp() -> dict:
    seconds = tcp_echo(1 << 20)
    return {"bytes": 1 << 20, "seconds": round(seconds, 3)}


def check_tcp3() -> dict:
    """Three concurrent connections of 256 KiB each."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            tcp_echo(256 * 1024)
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT_S * 2)
    assert not errors, repr(errors)
    assert not any(t.is_alive() for t in threads), "a connection hung"
    return {"connections": 3}


CHECKS = {"ping": check_ping, "udp": check_udp, "tcp": check_tcp, "tcp3": check_tcp3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["serve", *CHECKS])
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--loss", type=float, default=0.0, help="serve: drop this fraction")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.max_seconds, args.loss)
    else:
        print(json.dumps(CHECKS[args.mode]()), flush=True)


if __name__ == "__main__":
    main()
