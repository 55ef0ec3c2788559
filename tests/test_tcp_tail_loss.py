"""A lost last segment of a TCP echo is resent by the echo server's own timer, through real
processes in a network namespace this module creates (root only).

The driver (tests/components/lossy.py) drops the first echoed TCP segment. The Linux peer is
kept from retransmitting its data for far longer than the test waits, so none of its frames
wakes the echo server: only the frames the server's timer handler produced can deliver the echo.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from test_net_system import TESTS, EchoSystem, _privileged

from sddf.tools.netns import NetNamespace

SERVER = "10.0.0.2"
ECHO_TIMEOUT_S = 10

pytestmark = [pytest.mark.skipif(_privileged() is not None, reason=_privileged() or ""),
              pytest.mark.timeout(120)]


class LossyEchoSystem(EchoSystem):
    """EchoSystem running tests/systems_lossy.py: the echo system with the lossy TAP driver."""

    def __init__(self, ns: NetNamespace, run_dir: Path) -> None:
        self.ns, self.log = ns, run_dir / "monitor.log"
        path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        self.env = dict(os.environ, SDDF_RUN_DIR=str(run_dir), PYTHONPATH=path)
        command = [sys.executable, "-m", "sddf.cli", "run", str(TESTS / "systems_lossy.py")]
        self.monitor = subprocess.Popen(ns.exec_prefix() + command, env=self.env,
                                        stdout=self.log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LossyEchoSystem]:
    with NetNamespace("tail-loss") as ns:
        system = LossyEchoSystem(ns, tmp_path_factory.mktemp("run"))
        try:
            system.wait_ready()
            yield system
        finally:
            if system.monitor.poll() is None:
                system.stop()


def test_lost_last_segment_is_retransmitted_by_the_servers_timer(lossy: LossyEchoSystem) -> None:
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
