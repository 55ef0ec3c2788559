"""The echo system end to end, in a network namespace this module creates (root only).

ping, UDP and TCP echo of both clients (one behind a copier), ARP broadcast to both, a frame
for an unknown MAC returned to the driver, a malicious client refused while the other keeps
echoing, and nothing left behind.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from sddf import control
from sddf.tools.netns import NetNamespace, tap_unavailable

TESTS = Path(__file__).resolve().parent
CLIENTS = {"client0": "10.0.0.2", "client1": "10.0.0.3"}
RX_BUFFERS = 512


pytestmark = [pytest.mark.skipif(tap_unavailable() is not None, reason=tap_unavailable() or ""),
              pytest.mark.timeout(240)]


class EchoSystem:
    """The echo system running in its own namespace; probes run inside it."""

    def __init__(self, ns: NetNamespace, run_dir: Path, system: str = "echo") -> None:
        """``system``: the bundled echo system, or a system file giving the same addresses."""
        self.ns = ns
        self.env = dict(os.environ, SDDF_RUN_DIR=str(run_dir),
                        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        self.log = run_dir / "monitor.log"
        self.monitor = subprocess.Popen(ns.exec_prefix() + [sys.executable, "-m", "sddf.cli", "run", system],
                                        env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def python(self, code: str, timeout: float = 120) -> Any:
        """Run Python ``code`` inside the namespace; it prints one JSON value, returned here."""
        out = subprocess.run(self.ns.exec_prefix() + [sys.executable, "-c", code], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def control(self, request: dict) -> tuple[dict, list[int]]:
        return control.request(self.env["SDDF_RUN_DIR"], "echo", request)

    def counters(self, settle_s: float = 5.0) -> dict[str, dict[str, int]]:
        """Every PD's counters, once two fresh snapshots of all of them in a row agree (so a frame
        sent just before has made its way through the PDs), or what there is after ``settle_s``."""
        deadline = time.monotonic() + settle_s
        last = None
        while True:
            reply = self.control({"cmd": "counters", "fresh": True})[0]
            if (not reply["stale"] and reply["counters"] == last) or time.monotonic() >= deadline:
                return reply["counters"]
            last = None if reply["stale"] else reply["counters"]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        code = ("import json; from sddf.tools.probe import icmp_ping\n"
                f"print(json.dumps(all(icmp_ping(ip, 1, 0.5)[0] for ip in {list(CLIENTS.values())!r})))")
        while time.monotonic() < deadline:
            assert self.monitor.poll() is None, self.log.read_text()
            try:
                if self.python(code):
                    return
            except AssertionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"echo clients never answered:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.monitor.send_signal(signal.SIGINT)
        try:
            return self.monitor.wait(15)
        except subprocess.TimeoutExpired:
            self.monitor.kill()
            raise


@contextmanager
def running_echo(namespace: str, run_dir: Path, system: str = "echo") -> Iterator[EchoSystem]:
    """An echo system answering in a network namespace of its own; stopped and removed after."""
    with NetNamespace(namespace) as ns:
        echo = EchoSystem(ns, run_dir, system)
        try:
            echo.wait_ready()
            yield echo
        finally:
            if echo.monitor.poll() is None:
                echo.stop()


def wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    """Wait (bounded) for the processes to disappear; return those still there."""
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if os.path.exists(f"/proc/{p}")]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoSystem]:
    with running_echo("test", tmp_path_factory.mktemp("run")) as system:
        yield system


def _probe(echo: EchoSystem, call: str) -> Any:
    return echo.python(f"import json, os; from sddf.tools.probe import *\nprint(json.dumps({call}))")


@pytest.mark.parametrize("ip", CLIENTS.values())
def test_ping(echo: EchoSystem, ip: str) -> None:
    rtts = _probe(echo, f"icmp_ping({ip!r}, 5)")
    assert all(r is not None for r in rtts), rtts


@pytest.mark.parametrize("ip", CLIENTS.values())
@pytest.mark.parametrize("size", [1, 1472])
def test_udp_echo_sizes(echo: EchoSystem, ip: str, size: int) -> None:
    assert _probe(echo, f"udp_echo({ip!r}, [os.urandom({size})])") == 1


@pytest.mark.parametrize("ip", CLIENTS.values())
def test_udp_burst_of_10000_no_loss(echo: EchoSystem, ip: str) -> None:
    payloads = "[i.to_bytes(4, 'big') * 8 for i in range(10000)]"
    replies = _probe(echo, f"udp_echo({ip!r}, {payloads}, window=8, timeout=2.0)")
    assert replies == 10000, echo.counters()


@pytest.mark.parametrize("ip", CLIENTS.values())
def test_tcp_echo_10MB_byte_for_byte(echo: EchoSystem, ip: str) -> None:
    code = ("import hashlib, random; rnd = random.Random(5); data = rnd.randbytes(10 * 1024 * 1024); "
            f"back = tcp_echo({ip!r}, data, timeout=120); "
            "ok = (len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())")
    size, same = echo.python(f"import json; from sddf.tools.probe import *\n{code}\nprint(json.dumps(ok))", timeout=180)
    assert (size, same) == (10 * 1024 * 1024, True)


def _raw_frame(dst: bytes, ethertype: int, payload: bytes) -> str:
    """Code that sends one raw Ethernet frame out of the TAP's host side."""
    frame = dst + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype) + payload
    return ("import socket, json\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            f"s.bind(('sddf0', 0)); s.send({frame!r}); print(json.dumps(True))")


def test_arp_broadcast_reaches_both_clients(echo: EchoSystem) -> None:
    before = echo.counters()
    # from an address no later test uses: the clients learn its (made-up) MAC from the request
    sender_mac, sender_ip = bytes.fromhex("020000000001"), socket.inet_aton("10.0.0.99")
    request = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, sender_mac, sender_ip, b"\0" * 6,
                          socket.inet_aton(CLIENTS["client1"]))
    assert echo.python(_raw_frame(b"\xff" * 6, 0x0806, request))
    after = echo.counters()
    assert after["net_virt_rx"]["broadcast"] > before["net_virt_rx"].get("broadcast", 0)
    # client0 saw the request for client1's address (and ignored it); client1 answered it
    assert after["client0"].get("arp_not_for_us", 0) > before["client0"].get("arp_not_for_us", 0)


def test_unknown_mac_frame_returns_to_driver(echo: EchoSystem) -> None:
    before = echo.counters()["net_virt_rx"].get("no_client", 0)
    assert echo.python(_raw_frame(b"\x02\x00\x00\x00\x00\x99", 0x0800, bytes(46)))
    counters = echo.counters()
    assert counters["net_virt_rx"]["no_client"] == before + 1
    reply, fds = echo.control({"cmd": "queues"})
    for fd in fds:
        os.close(fd)
    # every rx buffer is accounted for: in the driver's free queue, in its hands, or with clients
    from sddf.tools.top import QueueViews
    views = QueueViews(*echo.control({"cmd": "queues"}))
    occupancy = {label: used for label, used, _ in views.rows()}
    in_free = occupancy["net_drv_rx_free"] + occupancy["net_drv_rx_active"]
    held = counters["eth_driver"].get("rx_spare", 0) + counters["net_virt_rx"].get("held_by_clients", 0)
    assert in_free + held == RX_BUFFERS, (occupancy, counters)


def test_malicious_client_is_refused_and_the_other_keeps_echoing(echo: EchoSystem) -> None:
    echo.control({"cmd": "swap", "pd": "client0", "program": "components.malicious:GarbageClient"})
    # traffic to the malicious client makes it jump its tx index (once virt_tx took its garbage)
    for _ in range(50):
        echo.python("import json, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                    "s.sendto(b'x', ('10.0.0.2', 1235)); print(json.dumps(True))")
        if echo.counters()["net_virt_tx"].get("client0.tx.active.protocol_errors"):
            break
    replies = _probe(echo, "udp_echo('10.0.0.3', [bytes([i % 256]) * 100 for i in range(2000)], window=8)")
    counters = echo.counters()
    assert replies == 2000, counters
    tx, rx = counters["net_virt_tx"], counters["net_virt_rx"]
    # outside its region, not the start of a buffer, longer than a buffer: refused by the queue end
    assert tx.get("client0.tx.active.refused", 0) >= 3, (tx, echo.log.read_text()[-4000:])
    for what in ("bad_length", "not_owned", "tx.active.protocol_errors"):
        assert tx.get(f"client0.{what}", 0) >= 1, (tx, echo.log.read_text()[-4000:])
    assert rx.get("client0.rx.free.refused", 0) >= 1, rx  # not a buffer at all
    assert rx.get("client0.bad_return", 0) >= 2, rx  # buffers it does not hold
    status = echo.control({"cmd": "status"})[0]["pds"]
    assert all(pd["state"] == "running" for pd in status), status


def test_nothing_left_behind(tmp_path: Path) -> None:
    """Stopping a system (its own, so no other test depends on the order) leaves no process, no
    shared memory of its monitor, no control socket, and its namespace goes with it."""
    with running_echo("left", tmp_path) as echo:
        pids = [pd["pid"] for pd in echo.control({"cmd": "status"})[0]["pds"]] + [echo.monitor.pid]
        ns = echo.ns.name
        assert echo.stop() == 0, echo.log.read_text()
        assert not wait_gone(pids)
        assert not list(Path("/dev/shm").glob(f"sddf-{echo.monitor.pid}-*"))
        assert sorted(os.listdir(tmp_path)) == ["monitor.log"]
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_netns_stopped_by_a_signal_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    """`sddf run --netns` passes a stop signal on to the system and removes its namespace."""
    env = dict(os.environ, SDDF_RUN_DIR=str(tmp_path))
    # start_new_session: SIGINT reaches `sddf` only (as `kill -INT` would), not via a shared group
    run = subprocess.Popen([sys.executable, "-m", "sddf.cli", "run", "echo", "--netns"], env=env,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        for line in run.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "running system" in line:
                break
        ns = next(line.split()[3].rstrip(";") for line in lines if "network namespace" in line)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        assert pids, f"no process in {ns}: {''.join(lines)}"
        run.send_signal(sig)
        assert run.wait(timeout=20) == 0
    finally:
        run.kill()
        run.wait()
    assert not wait_gone([int(p) for p in pids])
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
