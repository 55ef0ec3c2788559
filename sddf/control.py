"""The control protocol between a running system's monitor and its clients (``sddf status``, …).

Each running system listens on a Unix stream socket, ``<run dir>/<system>.sock``. A client
connects and sends one request, a JSON object on one line (``{"cmd": "status"}``); the monitor
answers with one JSON line, ``{"ok": true, …}`` or ``{"ok": false, "error": "…"}``, which may
carry fds (SCM_RIGHTS, e.g. read-only region fds for ``sddf top``). The run directory is an
explicit parameter everywhere; entry points pass :func:`default_run_dir` once.
"""
from __future__ import annotations

import json
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

RUN_DIR_ENV = "SDDF_RUN_DIR"
SOCKET_SUFFIX = ".sock"
REQUEST_TIMEOUT_S = 2.0  # how long a connected client may take to send its request line
REPLY_TIMEOUT_S = 1.0  # how long a reply may take to send
LISTEN_BACKLOG = 64
MAX_LINE = 1 << 20
MAX_FDS = 253  # SCM_MAX_FD: the most fds one message can carry

Request = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[[Request], tuple[Reply, list[int]]]


class ControlError(Exception):
    """A control request failed: the system is not running, or its monitor refused the request."""


def default_run_dir() -> str:
    """Where control sockets live: ``$SDDF_RUN_DIR``, else /tmp/sddf-<uid>."""
    return os.environ.get(RUN_DIR_ENV, f"/tmp/sddf-{os.getuid()}")


def socket_path(run_dir: str, system: str) -> str:
    return os.path.join(run_dir, system + SOCKET_SUFFIX)


def running_systems(run_dir: str) -> list[str]:
    """The names of the systems with a control socket in ``run_dir``, sorted."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(f.removesuffix(SOCKET_SUFFIX) for f in os.listdir(run_dir) if f.endswith(SOCKET_SUFFIX))


def only_running_system(run_dir: str) -> str:
    """The one system running in ``run_dir`` (a ControlError if there are none or several)."""
    running = running_systems(run_dir)
    if not running:
        raise ControlError(f"no system is running (no control socket in {run_dir})")
    if len(running) > 1:
        raise ControlError(f"several systems are running ({', '.join(running)}): name one")
    return running[0]


# ---- client ---------------------------------------------------------------------------------
def request(run_dir: str, system: str, req: Request, timeout: float | None = None) -> tuple[Reply, list[int]]:
    """Send ``req`` to ``system``'s monitor; its reply (``ok`` true) and the fds it sent (now the caller's)."""
    path = socket_path(run_dir, system)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"system {system!r} is not running (no monitor listens on {path})") from None
        sock.sendall(_encode(req))
        data, fds = _receive_reply(sock)
    if data.endswith(b"\n"):
        reply = json.loads(data)
        if reply.get("ok"):
            return reply, fds
        error = f"system {system!r}: {reply.get('error')}"
    else:
        error = f"system {system!r}: the monitor hung up without answering {req.get('cmd')!r}"
    for fd in fds:
        os.close(fd)
    raise ControlError(error)


def _receive_reply(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, got, _, _ = socket.recv_fds(sock, MAX_LINE, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        fds += got
        if not chunk:
            break
        data += chunk
    return data, fds


# ---- server ---------------------------------------------------------------------------------
@dataclass
class _Client:
    """A connected client whose request line is still arriving."""

    sock: socket.socket
    deadline: float
    data: bytearray = field(default_factory=bytearray)


class Server:
    """A system's listening control socket, served without ever blocking on a client.

    :meth:`fileno` is readable when a client connects or sends; :meth:`serve` then reads what
    is there, and answers each complete request line with ``handler``. A client that sends more
    than MAX_LINE bytes without a newline is answered with an error; one that says nothing for
    ``request_timeout`` seconds (see :meth:`next_deadline`), or hangs up, is dropped. The
    handler's fds are sent with the reply and then closed."""

    def __init__(self, run_dir: str, system: str, handler: Handler,
                 request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.path = socket_path(run_dir, system)
        self._handler = handler
        self._timeout = request_timeout
        self._clients: dict[int, _Client] = {}
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        _remove_stale(self.path, system)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self._sock.bind(self.path)
            self._sock.listen(LISTEN_BACKLOG)
        except OSError:
            self._sock.close()
            raise
        self._epoll = select.epoll()
        self._epoll.register(self._sock.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def serve(self, timeout: float = 0) -> None:
        """Handle what is ready (waiting at most ``timeout`` s for it), then drop silent clients."""
        for fd, _events in self._epoll.poll(timeout):
            if fd == self._sock.fileno():
                self._accept()
            elif fd in self._clients:
                self._read(self._clients[fd])
        now = time.monotonic()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._drop(client)

    def next_deadline(self) -> float | None:
        """When the next silent client is to be dropped (call :meth:`serve` then), or None."""
        return min((c.deadline for c in self._clients.values()), default=None)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self._clients[conn.fileno()] = _Client(conn, time.monotonic() + self._timeout)
            self._epoll.register(conn.fileno(), select.EPOLLIN)

    def _read(self, client: _Client) -> None:
        try:
            chunk = client.sock.recv(MAX_LINE)
        except BlockingIOError:
            return
        except OSError:  # reset
            chunk = b""
        if not chunk:
            self._drop(client)
            return
        client.data += chunk
        line, newline, _rest = client.data.partition(b"\n")
        if newline:
            self._answer(client, bytes(line))
        elif len(client.data) > MAX_LINE:
            self._answer(client, None)

    def _answer(self, client: _Client, line: bytes | None) -> None:
        """Answer one request (None: one too long to read) and drop the client."""
        try:
            if line is None:
                raise ValueError(f"request longer than {MAX_LINE} bytes without a newline")
            reply, fds = self._handler(_decode(line))
        except Exception as exc:  # noqa: BLE001 - a bad request is answered, never fatal
            reply, fds = {"ok": False, "error": str(exc)}, []
        try:
            client.sock.settimeout(REPLY_TIMEOUT_S)  # a client reading its reply gets it whole
            _send(client.sock, _encode(reply), fds)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            pass  # the client left before its answer (or reads too slowly)
        finally:
            for fd in fds:
                os.close(fd)
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        self._epoll.unregister(client.sock.fileno())
        client.sock.close()

    def close(self) -> None:
        """Drop every client, stop listening and remove the socket file."""
        for client in list(self._clients.values()):
            self._drop(client)
        self._epoll.close()
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _remove_stale(path: str, system: str) -> None:
    """Remove a socket left by a killed monitor; refuse if a monitor still answers on it."""
    if not os.path.exists(path):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
            return
    raise ControlError(f"system {system!r} is already running (control socket {path})")


def _encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def _decode(line: bytes) -> Request:
    try:
        req = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"malformed request {line[:80]!r}: {exc}") from None
    if not isinstance(req, dict):
        raise ValueError(f"malformed request {line[:80]!r}: not a JSON object with a 'cmd'")
    return req


def _send(conn: socket.socket, data: bytes, fds: list[int]) -> None:
    """``data``, with ``fds`` on its first bytes (sendmsg may send less than all of it)."""
    sent = socket.send_fds(conn, [data], fds) if fds else 0
    conn.sendall(data[sent:])
