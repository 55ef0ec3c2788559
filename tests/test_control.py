"""The control protocol (sddf.control) and the monitor's fresh counters.

In-process: a request is answered (with fds), a bad request gets its error, and a client that
hangs up early, or says nothing, never breaks the server. Against a running monitor: the same
rude clients leave it serving; the run directory given wins over SDDF_RUN_DIR, and a system
runs once per run directory; ``counters`` with ``fresh`` returns every count made before the
request, a PD still in ``init`` is not waited for, and a stopped PD delays the answer by the
bound only; both are marked stale. Run directories are passed explicitly (SDDF_RUN_DIR, set by
the ``run_dir`` fixture, only tags the processes a run starts).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from components.counter import Ticker
from helpers.sddf_cli import SDDF
from monitor_fixtures import DEADLINE_S, Start, SystemRun, run_dir, systems  # noqa: F401 - fixtures
from sddf.component import Component
from sddf.control import (MAX_LINE, ControlError, Reply, Request, Server, default_run_dir, only_running_system,
                          request, socket_path)
from sddf.monitor import FRESH_WAIT_S

pytestmark = pytest.mark.timeout(60)

SILENT_CLIENT_TIMEOUT_S = 0.2
SOCKET_BUFFERS = 4 << 20  # what the kernel may buffer on both ends of a Unix stream socket, generously
TICK_PERIOD_S = 0.02  # a tenth of the stats period: unasked, published counters lag several ticks
FRESH_ROUNDS = 5
SLOW_INIT_S = 5.0  # long past the test's fresh request


class CountingTicker(Ticker):
    """A Ticker that also counts its ticks in its counters (PDs import it from this module)."""

    def notified(self, ch: int) -> None:
        self.counters["ticks"] += 1
        super().notified(ch)


@dataclass
class SlowStartConfig:
    init_s: float


class SlowStarter(Component):
    """Takes ``init_s`` seconds in ``init`` (PDs import it from this module)."""

    Config = SlowStartConfig

    def init(self) -> None:
        time.sleep(self.config.init_s)


# ---- in-process: one server, clients in threads ---------------------------------------------
@pytest.fixture
def calls() -> list[Request]:
    return []


@pytest.fixture
def server(tmp_path: Path, calls: list[Request]) -> Iterator[Server]:
    """A server for system "sys" in tmp_path that records each request and echoes it back."""
    def echo(req: Request) -> tuple[Reply, list[int]]:
        calls.append(req)
        return {"ok": True, "echo": req}, []

    srv = Server(str(tmp_path), "sys", echo, request_timeout=SILENT_CLIENT_TIMEOUT_S)
    yield srv
    srv.close()


def served(srv: Server, req: Request) -> Callable[[], tuple[Reply, list[int]]]:
    """Send ``req`` from a thread while ``srv`` serves one client; return a function giving the
    client's result (re-raising its exception)."""
    result: list[Any] = []

    def client() -> None:
        try:
            result.append(request(os.path.dirname(srv.path), "sys", req, timeout=10))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        srv.serve(0.05)
    thread.join(10)

    def outcome() -> tuple[Reply, list[int]]:
        if isinstance(result[0], Exception):
            raise result[0]
        return result[0]
    return outcome


def settle(srv: Server) -> None:
    """Serve until no client is left waiting (each is answered or dropped), within 5 s."""
    deadline = time.monotonic() + 5
    srv.serve(0.05)
    while srv.next_deadline() is not None and time.monotonic() < deadline:
        srv.serve(0.05)
    assert srv.next_deadline() is None, "a client is still waiting"


def connect(srv: Server) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(srv.path)
    return sock


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_request_is_answered_with_its_fds(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    srv = Server(str(tmp_path), "sys", lambda req: ({"ok": True, "cmd": req["cmd"]}, [os.dup(read_end)]))
    try:
        reply, fds = served(srv, {"cmd": "give"})()
    finally:
        srv.close()
    assert reply == {"ok": True, "cmd": "give"}
    [fd] = fds
    os.write(write_end, b"through the fd")
    assert os.read(fd, 64) == b"through the fd"
    for f in (fd, read_end, write_end):
        os.close(f)
    assert not os.path.exists(socket_path(str(tmp_path), "sys")), "close() left the socket file"


@pytest.mark.parametrize("line, error", [(b"not json\n", "malformed request b'not json"),
                                         (b"[1, 2]\n", "not a JSON object")])
def test_a_malformed_request_is_answered_with_its_error(server: Server, calls: list[Request],
                                                        line: bytes, error: str) -> None:
    with connect(server) as sock:
        sock.sendall(line)
        settle(server)
        assert error in sock.recv(4096).decode()
    assert calls == []


def test_a_handler_error_reaches_the_client_naming_the_system(tmp_path: Path) -> None:
    def refuse(req: Request) -> tuple[Reply, list[int]]:
        raise KeyError(f"no PD named {req['pd']!r}")

    srv = Server(str(tmp_path), "sys", refuse)
    try:
        outcome = served(srv, {"cmd": "restart", "pd": "ghost"})
    finally:
        srv.close()
    with pytest.raises(ControlError, match=r"system 'sys': .*no PD named 'ghost'"):
        outcome()


def test_a_client_that_connects_and_hangs_up_is_dropped(server: Server, calls: list[Request]) -> None:
    connect(server).close()
    settle(server)  # must not raise
    assert calls == []
    assert served(server, {"cmd": "after"})()[0]["echo"] == {"cmd": "after"}


def test_a_client_that_leaves_before_its_reply_is_dropped(server: Server, calls: list[Request]) -> None:
    with connect(server) as sock:
        sock.sendall(b'{"cmd": "status"}\n')
    settle(server)  # the client is gone when the reply is sent: must not raise
    assert calls == [{"cmd": "status"}]
    assert served(server, {"cmd": "after"})()[0]["echo"] == {"cmd": "after"}


def test_fds_for_a_client_that_left_are_closed(tmp_path: Path) -> None:
    given: list[int] = []

    def give(req: Request) -> tuple[Reply, list[int]]:
        given.append(os.open(os.devnull, os.O_RDONLY))
        return {"ok": True}, given[-1:]

    srv = Server(str(tmp_path), "sys", give)
    try:
        with connect(srv) as sock:
            sock.sendall(b'{"cmd": "queues"}\n')
        settle(srv)
    finally:
        srv.close()
    assert not fd_is_open(given[0]), "the fd meant for the client leaked in the server"


def test_a_silent_client_is_dropped_after_the_request_timeout(server: Server, calls: list[Request]) -> None:
    with connect(server) as sock:
        sock.sendall(b'{"cmd": "sta')  # and nothing more
        started = time.monotonic()
        settle(server)
        assert time.monotonic() - started < SILENT_CLIENT_TIMEOUT_S + 1.0
        assert sock.recv(64) == b"", "the server must have hung up on the silent client"
    assert calls == []


def test_silent_clients_do_not_hold_up_others(server: Server) -> None:
    silent = [connect(server) for _ in range(8)]
    try:
        started = time.monotonic()
        assert served(server, {"cmd": "status"})()[0]["echo"] == {"cmd": "status"}
        assert time.monotonic() - started < SILENT_CLIENT_TIMEOUT_S, "a request waited behind silent clients"
    finally:
        for sock in silent:
            sock.close()


def test_a_request_without_a_newline_cannot_grow_the_server(server: Server, calls: list[Request]) -> None:
    with connect(server) as sock:
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sent += sock.send(b"x" * 65536)
            except BlockingIOError:
                server.serve(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        assert sent <= MAX_LINE + SOCKET_BUFFERS, f"the server took {sent} bytes of one request"
        settle(server)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        assert b"longer than" in reply, reply[:200]
    assert calls == []


def test_no_monitor_is_reported_by_system_name(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"system 'nope' is not running"):
        request(str(tmp_path), "nope", {"cmd": "status"})


def test_a_second_server_for_a_running_system_is_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"system 'sys' is already running"):
        Server(str(tmp_path), "sys", lambda req: ({"ok": True}, []))


def test_a_socket_left_by_a_killed_monitor_is_replaced(tmp_path: Path) -> None:
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(socket_path(str(tmp_path), "sys"))
    left.close()  # the file stays, nobody listens: what a SIGKILLed monitor leaves
    srv = Server(str(tmp_path), "sys", lambda req: ({"ok": True, "fresh": True}, []))
    try:
        assert served(srv, {"cmd": "status"})()[0]["fresh"]
    finally:
        srv.close()


def test_the_only_running_system_is_found_in_its_run_dir(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no system is running"):
        only_running_system(str(tmp_path / "missing"))
    servers = [Server(str(tmp_path), "alpha", lambda req: ({"ok": True}, []))]
    try:
        assert only_running_system(str(tmp_path)) == "alpha"
        servers.append(Server(str(tmp_path), "beta", lambda req: ({"ok": True}, [])))
        with pytest.raises(ControlError, match=r"several systems are running \(alpha, beta\)"):
            only_running_system(str(tmp_path))
    finally:
        for srv in servers:
            srv.close()


def test_default_run_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SDDF_RUN_DIR", str(tmp_path))
    assert default_run_dir() == str(tmp_path)
    monkeypatch.delenv("SDDF_RUN_DIR")
    assert default_run_dir() == f"/tmp/sddf-{os.getuid()}"


# ---- against a running monitor ---------------------------------------------------------------
def test_the_run_dir_given_wins_over_the_environment(run_dir: Path) -> None:
    explicit = run_dir / "explicit"  # SDDF_RUN_DIR is run_dir itself (the fixture's)
    run = SystemRun("pingpong", "pingpong", explicit)
    try:
        run.wait_for(r"^ping: .*counters ok$")
        assert (explicit / "pingpong.sock").exists() and not (run_dir / "pingpong.sock").exists()
        assert run.status()["ping"]["state"] == "running"
    finally:
        run.close()


FRESHER = (f'fresher = add_ticker(sdf, "fresher", period_s={TICK_PERIOD_S})\n'
           'fresher.program = "test_control:CountingTicker"\n')


def fresh_counters(run: SystemRun) -> Reply:
    return run.control({"cmd": "counters", "fresh": True})


def all_past_init(run: SystemRun) -> None:
    """Wait until every PD answers a fresh request (a PD that logged from ``init`` may not be past it)."""
    deadline = time.monotonic() + DEADLINE_S
    while (stale := fresh_counters(run)["stale"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stale == {}


def test_the_monitor_serves_on_after_clients_that_hang_up_early(systems: Start) -> None:
    run = systems("rude", FRESHER + 'add_faulty(sdf, "idler", action="idle")')
    run.wait_for(r"^idler: boot 1 pid \d+$")
    path = socket_path(str(run.run_dir), "rude")
    rude: list[bytes] = [b"", b'{"cmd": "status"}\n', b'{"cmd": "counters", "fresh": true}\n']
    for line in rude:  # connect and hang up, then ask and leave before the answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(line)
    assert {pd["state"] for pd in run.status().values()} == {"running"}, run.output()
    assert run.proc.poll() is None
    assert not run.matching(r"Traceback|Error"), run.output()


def test_silent_clients_do_not_hold_up_the_monitor(systems: Start) -> None:
    run = systems("silent", FRESHER + 'add_faulty(sdf, "idler", action="idle")')
    run.wait_for(r"^idler: boot 1 pid \d+$")
    path = socket_path(str(run.run_dir), "silent")
    silent = []
    for _ in range(8):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        silent.append(sock)
    try:
        started = time.monotonic()
        assert run.status()["fresher"]["state"] == "running"
        assert time.monotonic() - started < 1.0, "status waited behind silent clients"
    finally:
        for sock in silent:
            sock.close()


def test_a_system_runs_once_per_run_dir(run_dir: Path) -> None:
    first = SystemRun("pingpong", "pingpong", run_dir)
    try:
        first.wait_for(r"^ping: .*counters ok$")
        second = subprocess.run([SDDF, "run", "pingpong", "--run-dir", str(run_dir)],
                                capture_output=True, text=True, timeout=DEADLINE_S)
        assert second.returncode == 1, second.stderr
        assert f"sddf: system 'pingpong' is already running (control socket {run_dir}/pingpong.sock)" \
            in second.stderr.splitlines()
        assert "Traceback" not in second.stderr
        assert first.status()["ping"]["state"] == "running"
    finally:
        first.close()


def test_fresh_counters_hold_every_count_made_before_the_request(systems: Start) -> None:
    """The idler's counters never change, so it publishes only when asked: without the ask
    the monitor would wait out the bound for it."""
    run = systems("fresh", FRESHER + 'add_faulty(sdf, "idler", action="idle")')
    run.wait_for(r"^idler: boot 1 pid \d+$")
    mark = run.wait_for(r"^fresher: tick 1$").index
    all_past_init(run)
    for _ in range(FRESH_ROUNDS):
        tick = run.wait_for(r"^fresher: tick (\d+)$", after=mark)
        started = time.monotonic()
        reply = fresh_counters(run)
        assert time.monotonic() - started < FRESH_WAIT_S
        assert reply["stale"] == {}
        assert reply["counters"]["fresher"]["ticks"] >= int(tick.match[1]), tick.text
        mark = run.mark()


def test_a_starting_pd_is_not_waited_for(systems: Start) -> None:
    run = systems("slow", FRESHER + "from sddf.system import ProtectionDomain\n"
                  f'sdf.add_pd(ProtectionDomain("slow", "test_control:SlowStarter", config={{"init_s": {SLOW_INIT_S}}}))')
    run.wait_for(r"^fresher: tick 1$")
    started = time.monotonic()
    reply = fresh_counters(run)
    assert time.monotonic() - started < FRESH_WAIT_S
    assert reply["stale"] == {"slow": "starting (not yet past init)"}


def test_a_stopped_pd_delays_fresh_counters_by_the_bound_only(systems: Start) -> None:
    run = systems("stopped", FRESHER + 'add_faulty(sdf, "sleeper", action="idle")')
    run.wait_for(r"^sleeper: boot 1 pid \d+$")
    run.wait_for(r"^fresher: tick 1$")
    all_past_init(run)  # so the sleeper is stopped in its loop
    sleeper = run.status()["sleeper"]["pid"]
    os.kill(sleeper, signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply = fresh_counters(run)
        took = time.monotonic() - started
        shown = run.cli("counters")
    finally:
        os.kill(sleeper, signal.SIGCONT)
    assert FRESH_WAIT_S <= took < FRESH_WAIT_S + 1.0
    assert reply["stale"] == {"sleeper": f"did not publish within {FRESH_WAIT_S:g} s"}
    assert reply["counters"]["fresher"]["ticks"] >= 1
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("sleeper ")]
    assert line.endswith(f"(stale: did not publish within {FRESH_WAIT_S:g} s)"), shown.stdout
