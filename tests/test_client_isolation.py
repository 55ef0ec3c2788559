"""Through real processes: a stopped or killed echo client never stops the other client echoing.

The echo system runs under the monitor in its own network namespace; client1 sits behind a
copier, client0 maps the shared rx region. The traffic stays inside the namespace and is bounded.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest

from sddf.tools.netns import tap_unavailable
from test_net_system import CLIENTS, EchoSystem, _probe, running_echo

pytestmark = [pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or ""),
              pytest.mark.timeout(240)]
FLOOD = 3000  # datagrams sent at a stopped client: six times the shared rx pool
RESTART_WAIT_S = 20


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoSystem]:
    with running_echo("iso", tmp_path_factory.mktemp("run")) as system:
        yield system


def pid_of(echo: EchoSystem, pd: str) -> int | None:
    return next(p["pid"] for p in echo.control({"cmd": "status"})[0]["pds"] if p["name"] == pd)


def flood(echo: EchoSystem, ip: str, count: int) -> None:
    """Send ``count`` UDP datagrams to ``ip``'s echo port without reading replies."""
    echo.python("import json, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for i in range({count}): s.sendto(b'flood %d' % i, ({ip!r}, 1235))\n"
                "print(json.dumps(True))")


def wait_for_traffic(echo: EchoSystem, frames: int = 50) -> None:
    """Until the driver has received ``frames`` more frames than now (bounded by the test's timeout)."""
    start = echo.counters()["eth_driver"].get("rx_frames", 0)
    while echo.counters()["eth_driver"].get("rx_frames", 0) < start + frames:
        pass


def echoes(echo: EchoSystem, ip: str, count: int) -> int:
    return _probe(echo, f"udp_echo({ip!r}, [b'isolation %d' % i for i in range({count})], window=8)")


def test_a_stopped_client_behind_a_copier_does_not_stop_the_other(echo: EchoSystem) -> None:
    stopped = pid_of(echo, "client1")
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)
    try:
        flood(echo, CLIENTS["client1"], FLOOD)
        assert echoes(echo, CLIENTS["client0"], 200) == 200, echo.counters()
        assert all(rtt is not None for rtt in _probe(echo, f"icmp_ping({CLIENTS['client0']!r}, 3)"))
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert echo.counters()["client1_copier"].get("dropped_no_client_buffer", 0) > 0
    assert echoes(echo, CLIENTS["client1"], 100) == 100, "the stopped client echoes again once continued"


def test_a_client_killed_under_load_comes_back_and_the_other_keeps_echoing(echo: EchoSystem) -> None:
    for round_ in range(3):
        victim = pid_of(echo, "client0")
        assert victim is not None
        sender = subprocess.Popen(echo.ns.exec_prefix() + [  # frames keep arriving while client0 dies
            sys.executable, "-c",
            "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "end = time.monotonic() + 1.5\n"
            f"while time.monotonic() < end: s.sendto(b'load', ({CLIENTS['client0']!r}, 1235))"])
        try:
            wait_for_traffic(echo)
            os.kill(victim, signal.SIGKILL)
        finally:
            sender.wait(10)
        deadline = time.monotonic() + RESTART_WAIT_S
        while pid_of(echo, "client0") in (None, victim):
            assert time.monotonic() < deadline, f"client0 was not restarted (round {round_})"
            time.sleep(0.1)
        assert echoes(echo, CLIENTS["client1"], 100) == 100, f"round {round_}: the other client stopped"
        assert echoes(echo, CLIENTS["client0"], 100) == 100, f"round {round_}: the restarted client is deaf"
