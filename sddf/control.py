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
import socket
from typing import Any, Callable

RUN_DIR_ENV = "SDDF_RUN_DIR"
SOCKET_SUFFIX = ".sock"
REQUEST_TIMEOUT_S = 2.0  # how long the monitor waits for a connected client's request line
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
class Server:
    """A system's listening control socket; :meth:`serve_one` answers one client with ``handler``.

    The handler's fds are sent with the reply and then closed. A bad request is answered with
    its error; a client that hangs up, or says nothing for ``request_timeout`` seconds, is
    dropped: neither is the monitor's problem."""

    def __init__(self, run_dir: str, system: str, handler: Handler,
                 request_timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.path = socket_path(run_dir, system)
        self._handler = handler
        self._timeout = request_timeout
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        _remove_stale(self.path, system)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(self.path)
            self._sock.listen(8)
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def serve_one(self) -> None:
        """Accept one client, read its request line and answer it."""
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(self._timeout)
            try:
                with conn.makefile("rb") as lines:
                    line = lines.readline(MAX_LINE)
            except OSError:  # reset, or silent past the timeout
                return
            try:
                reply, fds = self._handler(_decode(line))
            except Exception as exc:  # noqa: BLE001 - a bad request is answered, never fatal
                reply, fds = {"ok": False, "error": str(exc)}, []
            try:
                _send(conn, _encode(reply), fds)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client left before its answer (or without asking anything)
            finally:
                for fd in fds:
                    os.close(fd)

    def close(self) -> None:
        """Stop listening and remove the socket file."""
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
