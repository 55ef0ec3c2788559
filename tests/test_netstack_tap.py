"""Real peers against sddf.apps.netstack: the Linux kernel's ARP/ICMP/UDP/TCP and Python
sockets talk to tests/netstack_harness.py over a TAP device, inside a network namespace that
this module creates and always deletes. Needs root (CAP_NET_ADMIN) and /dev/net/tun."""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sddf.tools.netns import tap_unavailable

HARNESS = Path(__file__).with_name("netstack_harness.py")
READY_TIMEOUT_S = 15
CHECK_TIMEOUT_S = 40


pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or "")]


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@contextlib.contextmanager
def network_namespace(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        assert name not in netns_list(), "the namespace was left behind"


class Server:
    """The harness's echo server in a namespace; stop() returns its counters."""

    def __init__(self, namespace: str, loss: float) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(HARNESS), "serve",
             "--max-seconds", "90", "--loss", str(loss)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.counters: dict[str, int] | None = None
        self.stderr = ""

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if readable else ""
        if line.strip() != "ready":
            self.stop()
            raise AssertionError(f"harness did not start: {line!r} {self.stderr!r}")

    def stop(self) -> dict[str, int]:
        """Close its stdin (its signal to exit), wait, kill if it does not."""
        if self.counters is None:
            try:
                out, self.stderr = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, self.stderr = self.proc.communicate()
            lines = out.strip().splitlines()
            self.counters = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        return self.counters


@contextlib.contextmanager
def echo_server(name: str, loss: float = 0.0) -> Iterator[tuple[str, Server]]:
    """A fresh namespace running the harness's echo server; both gone afterwards."""
    with network_namespace(name) as namespace:
        server = Server(namespace, loss)
        try:
            server.wait_ready()
            yield namespace, server
        finally:
            server.stop()
            assert server.proc.returncode is not None


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Server]]:
    with echo_server(f"sddf-test-{os.getpid()}") as namespace_and_server:
        yield namespace_and_server


def run_check(namespace: str, check: str) -> dict:
    """Run one client check of the harness in the namespace; returns what it printed."""
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, str(HARNESS), check],
                          capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    assert done.returncode == 0, f"{check} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ping(served: tuple[str, Server]) -> None:
    run_check(served[0], "ping")


def test_udp_echo_1_and_1472_bytes(served: tuple[str, Server]) -> None:
    assert run_check(served[0], "udp") == {"sizes": [1, 1472]}


def test_tcp_echo_of_one_megabyte(served: tuple[str, Server]) -> None:
    assert run_check(served[0], "tcp")["bytes"] == 1 << 20


def test_three_concurrent_tcp_connections(served: tuple[str, Server]) -> None:
    assert run_check(served[0], "tcp3") == {"connections": 3}


def test_the_kernel_sent_nothing_malformed(served: tuple[str, Server]) -> None:
    """Runs after the others: stops the server and reads its counters. Only frames that
    were not for us (IPv6 multicast and the like) may have been dropped."""
    server = served[1]
    counters = server.stop()
    assert server.proc.returncode == 0, server.stderr
    unexpected = {k: v for k, v in counters.items()
                  if k not in ("eth_not_for_us", "eth_unknown_type", "ip_not_for_us")}
    assert unexpected == {}


def test_tcp_echo_survives_five_percent_loss_each_way() -> None:
    """Both TCPs retransmit: ours on RTO, fast retransmit and partial ACKs."""
    with echo_server(f"sddf-test-{os.getpid()}-lossy", loss=0.05) as (namespace, server):
        assert run_check(namespace, "tcp")["bytes"] == 1 << 20
        counters = server.stop()
    assert counters.get("tcp_retransmitted", 0) > 0
