"""bench/echo_bare.py (the bare-process floor of the UDP echo benchmark) answers UDP echo on a TAP,
in a network namespace this module creates and deletes (root only), and stops cleanly on SIGTERM."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sddf.tools.netns import NetNamespace, tap_unavailable

REPO = Path(__file__).resolve().parent.parent
TAP, HOST_ADDR, SERVER_IP, SERVER_MAC, PORT = "sddf0", "10.0.0.1/24", "10.0.0.2", "02:00:00:00:00:02", 1235
SIZES = (1, 64, 1472)
DATAGRAMS = 20

# runs inside the namespace: send each payload, wait (1 s at most) for its echo, print the replies
# (stopping at the first that does not come)
SENDER = f"""
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
replies = []
for i in range({DATAGRAMS}):
    size = {SIZES!r}[i % {len(SIZES)}]
    s.sendto(bytes((i * 7 + k) & 0xFF for k in range(size)), ({SERVER_IP!r}, {PORT}))
    try:
        replies.append(s.recv(2048).hex())
    except socket.timeout:
        break
print(json.dumps(replies))
"""


@pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or "")
@pytest.mark.timeout(60)
def test_echo_bare_answers_udp_echo_and_stops_on_sigterm() -> None:
    with NetNamespace("echo-bare") as ns:
        ns.add_tap(TAP, HOST_ADDR)
        server = subprocess.Popen(ns.exec_prefix() + [sys.executable, str(REPO / "bench" / "echo_bare.py"),
                                                      "--tap", TAP, "--ip", SERVER_IP, "--mac", SERVER_MAC,
                                                      "--port", str(PORT)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([server.stdout], [], [], 10)
            line = server.stdout.readline() if ready else ""
            assert line.startswith(f"echo_bare: answering {SERVER_IP}:{PORT} on {TAP} (pids "), \
                f"no ready line: {line!r}, stderr {server.stderr.read() if server.poll() is not None else ''!r}"
            pids = [int(pid) for pid in line.rsplit("(pids ", 1)[1].rstrip(")\n").split(",")]
            assert len(pids) == 4

            sent = subprocess.run(ns.exec_prefix() + [sys.executable, "-c", SENDER], capture_output=True,
                                  text=True, timeout=15, check=True)
            replies = json.loads(sent.stdout)
            for i, reply in enumerate(replies):
                size = SIZES[i % len(SIZES)]
                assert bytes.fromhex(reply) == bytes((i * 7 + k) & 0xFF for k in range(size)), \
                    f"datagram {i} ({size} bytes): the reply differs from the payload"
            assert len(replies) == DATAGRAMS, \
                f"datagram {len(replies)} ({SIZES[len(replies) % len(SIZES)]} bytes): no reply within 1 s"

            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0, server.stderr.read()
            deadline = time.monotonic() + 5
            while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")], "children outlived echo_bare"
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
