"""A lost last segment of a TCP echo is resent by the echo server's own timer, through real
processes in a network namespace this module creates (root only).

The driver (tests/components/lossy.py) drops the first echoed TCP segment. The Linux peer is
kept from retransmitting its data for far longer than the test waits, so none of its frames
wakes the echo server: only the frames the server's timer handler produced can deliver the echo.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from sddf.tools.netns import tap_unavailable
from test_net_system import TESTS, EchoSystem, running_echo

SERVER = "10.0.0.2"
ECHO_TIMEOUT_S = 10

pytestmark = [pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or ""),
              pytest.mark.timeout(120)]


@pytest.fixture
def lossy(tmp_path: Path) -> Iterator[EchoSystem]:
    """The echo system with the lossy TAP driver (tests/systems_lossy.py)."""
    with running_echo("tail-loss", tmp_path, str(TESTS / "systems_lossy.py")) as system:
        yield system


def test_lost_last_segment_is_retransmitted_by_the_servers_timer(lossy: EchoSystem) -> None:
    # Linux resends its unacknowledged data after rto_min (30 s here), and sends no tail loss probe
    lossy.ns.run(["ip", "route", "add", f"{SERVER}/32", "dev", "sddf0", "rto_min", "30s"])
    lossy.ns.run(["sysctl", "-qw", "net.ipv4.tcp_early_retrans=0"])
    data = os.urandom(1000)
    code = ("import json; from sddf.tools.probe import tcp_echo\n"
            f"print(json.dumps(tcp_echo({SERVER!r}, {data!r}, timeout={ECHO_TIMEOUT_S}).hex()))")
    echoed = bytes.fromhex(lossy.python(code, timeout=ECHO_TIMEOUT_S + 20))
    counters = lossy.counters()
    assert len(echoed) == len(data), counters
    assert echoed == data
    assert counters["eth_driver"]["test_dropped"] == 1
    assert counters["client0"]["tcp_retransmitted"] >= 1
