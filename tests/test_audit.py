"""The buffer audit: missing, doubled and foreign buffers found per pool; ``sddf audit`` on a running system."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys

import pytest

from sddf.net.audit import Audit
from test_net_system import _probe, _raw_frame, running_echo
from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE, queue_size
from sddf.tools.netns import tap_unavailable

CAPACITY = 8
POOL = ("rx", 0x4000_0000, 4 * NET_BUFFER_SIZE)


def queue_holding(addresses: list[int], head: int = 0xFFFE) -> bytearray:
    """A net queue whose descriptors head.. name ``addresses`` (indices wrapping past 0xFFFF)."""
    memory = bytearray(queue_size(CAPACITY))
    for i, address in enumerate(addresses):
        struct.pack_into("<Q", memory, HEADER_SIZE + DESC_SIZE * ((head + i) % CAPACITY), address)
    struct.pack_into("<HH", memory, 0, (head + len(addresses)) & 0xFFFF, head)
    return memory


def buffer(i: int) -> int:
    return POOL[1] + i * NET_BUFFER_SIZE


def test_every_buffer_once_is_clean_wherever_it_is() -> None:
    audit = Audit()
    audit.add_queue(queue_holding([buffer(0), buffer(2)]), CAPACITY, [POOL])
    audit.add_queue(queue_holding([buffer(3)], head=5), CAPACITY, [POOL])
    audit.add([buffer(1)], [POOL])  # in a component's hands
    assert audit.clean and audit.problems() == []


def test_missing_doubled_and_foreign_buffers_are_named() -> None:
    audit = Audit()
    audit.add_queue(queue_holding([buffer(0), buffer(0), buffer(2) + 1]), CAPACITY, [POOL])
    audit.add([buffer(2)], [POOL])
    [report] = audit.pools.values()
    assert report.missing == [NET_BUFFER_SIZE, 3 * NET_BUFFER_SIZE]
    assert report.doubled == [0] and report.foreign == [buffer(2) + 1]
    assert audit.problems() == ["pool rx: 2 missing [0x800, 0x1800], 1 doubled [0x0], 1 foreign [0x40001001]"]


def test_a_broadcast_buffer_may_stand_in_as_many_places_as_its_references() -> None:
    audit = Audit()
    audit.add_queue(queue_holding([buffer(i) for i in range(4)] + [buffer(1)]), CAPACITY, [POOL])
    audit.expect("rx", NET_BUFFER_SIZE, 2)
    assert audit.clean


def test_a_queue_naming_several_pools() -> None:
    other = ("tx", 0x5000_0000, 2 * NET_BUFFER_SIZE)
    audit = Audit()
    audit.add_queue(queue_holding([buffer(0), other[1] + NET_BUFFER_SIZE]), CAPACITY, [POOL, other])
    assert [len(r.missing) for r in audit.pools.values()] == [3, 1]


@pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or "")
def test_sddf_audit_on_the_running_echo_system(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Clean after traffic; and clean while a broadcast frame waits in both clients' queues (both
    stopped): virt_rx's ledger says two clients hold that one buffer, so it is not doubled."""
    with running_echo("audit", tmp_path_factory.mktemp("run")) as echo:
        assert _probe(echo, "udp_echo('10.0.0.3', [b'x' * 100] * 500, window=8)") == 500
        done = sddf_audit(echo.env["SDDF_RUN_DIR"])
        assert done.returncode == 0, done.stdout + done.stderr
        for pool in ("net_rx_data", "net_tx_data_client0", "net_tx_data_client1", "net_rx_data_client1"):
            assert pool in done.stdout
        assert "clean: every buffer in exactly one place" in done.stdout
        pids = [pd["pid"] for pd in echo.control({"cmd": "status"})[0]["pds"] if pd["name"] in BROADCAST_TAKERS]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert echo.python(_raw_frame(b"\xff" * 6, 0x88B5, bytes(46)))  # a local experimental ethertype
            done = sddf_audit(echo.env["SDDF_RUN_DIR"])
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert done.returncode == 0, done.stdout + done.stderr


BROADCAST_TAKERS = ("client0", "client1_copier")  # what virt_rx gives a broadcast frame to


def sddf_audit(run_dir: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sddf.cli", "audit", "--system", "echo", "--run-dir", run_dir],
                          capture_output=True, text=True, timeout=60)
