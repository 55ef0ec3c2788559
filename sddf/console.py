"""The terminals behind ``serial:`` devices: opened raw for the driver, and always given back as found.

``sddf run`` may put a terminal in raw mode (its own, or a tty device). Before it does, a
:class:`TerminalGuard` saves the terminal's termios and starts a guardian: a tiny process (in its
own session, holding only the tty and the read end of a pipe) that ignores job-control and
termination signals and waits for the pipe to reach end of file. Only the monitor holds the
write end, so the guardian restores the terminal when the monitor ends however it ends — a
normal exit, an exception, or SIGKILL. A normal exit restores at once (:func:`release`) and the
guardian then leaves. A new pty (``serial:pty``) needs no guard: the monitor keeps its slave
open (so the driver never reads EIO while nobody is attached) and prints where to attach; at
release it lets a reader still attached take what was written before the pty goes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from functools import partial
from typing import Any, Callable

RELAY_CHUNK = 0x10000  # bytes the stdio relay moves at a time
PTY_DRAIN_S = 2.0      # at release, how long a pty's reader may take to read what was written
PTY_IDLE_S = 0.25      # ... unless what waits stands still this long: nobody is reading
PTY_POLL_S = 0.01
GUARDIAN_EXIT_S = 5.0  # a released guardian restores and exits at once; never wait longer than this
POSIX_VDISABLE = b"\0"  # a control character set to this does nothing (Linux)
#: what the guardian runs: argv = tty fd, pipe read end, the saved termios (repr); it says it is
#: ready on its stdout, then closes it
GUARDIAN = """\
import ast, os, signal, sys, termios
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTOU, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
tty, alive, saved = int(sys.argv[1]), int(sys.argv[2]), ast.literal_eval(sys.argv[3])
os.write(1, b"ready")
os.close(1)
while os.read(alive, 512):
    pass
try:
    termios.tcsetattr(tty, termios.TCSANOW, saved)
except termios.error:
    pass
"""

Attrs = list[Any]  # termios.tcgetattr's [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]

#: the device fd a serial opener returned -> what gives back what it holds (see :func:`release`)
_HELD: dict[int, Callable[[], None]] = {}


def raw_mode(attrs: Attrs) -> Attrs:
    """``attrs`` made raw as cfmakeraw(3) does: bytes pass unchanged both ways, one at a time."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attrs
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
               | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


def console_mode(attrs: Attrs) -> Attrs:
    """Raw, except that output still turns ``\\n`` into ``\\r\\n`` (the monitor's and the PDs' log
    lines share the terminal) and Ctrl-C still stops ``sddf run``; Ctrl-\\ (virt_rx's switch
    character) and Ctrl-Z are plain keys."""
    mode = raw_mode(attrs)
    mode[1] |= termios.OPOST | termios.ONLCR
    mode[3] |= termios.ISIG
    mode[6][termios.VQUIT] = mode[6][termios.VSUSP] = POSIX_VDISABLE
    return mode


class TerminalGuard:
    """Saves the termios of the terminal ``fd`` and starts its guardian (see the module docstring)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: Attrs = termios.tcgetattr(fd)
        alive_r, self._alive = os.pipe2(os.O_CLOEXEC)
        try:
            self.guardian = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GUARDIAN, str(fd), str(alive_r), repr(self.saved)],
                pass_fds=(fd, alive_r), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            os.close(self._alive)
            raise
        finally:
            os.close(alive_r)
        with self.guardian.stdout as ready:  # armed before the caller touches the terminal
            if ready.read() != b"ready":
                self.restore()
                raise OSError(f"the terminal guardian exited early (status {self.guardian.wait()})")

    def restore(self) -> None:
        """Restore the saved termios now and let the guardian go."""
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
        except termios.error:
            pass  # the terminal is gone: nothing to give back
        os.close(self._alive)
        try:
            self.guardian.wait(GUARDIAN_EXIT_S)
        except subprocess.TimeoutExpired:
            self.guardian.kill()
            self.guardian.wait()


def open_raw(path: str, mode: Callable[[Attrs], Attrs] = raw_mode) -> int:
    """Open the terminal ``path`` (read-write, non-blocking, not as a controlling terminal), guard
    it, and switch it to ``mode``; :func:`release` restores it. Raises OSError or termios.error."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    guard = None
    try:
        guard = TerminalGuard(fd)
        termios.tcsetattr(fd, termios.TCSANOW, mode(guard.saved))
    except BaseException:
        if guard is not None:
            guard.restore()
        os.close(fd)
        raise
    _HELD[fd] = guard.restore
    return fd


def open_pty() -> int:
    """A new pty: return its master (non-blocking); its slave, raw, stays open until :func:`release`.
    Prints the slave's path and how to attach to it."""
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        termios.tcsetattr(slave, termios.TCSANOW, raw_mode(termios.tcgetattr(slave)))
        path = os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    print(f"sddf: serial console on {path}; attach with one of:\n    picocom {path}\n    screen {path}",
          file=sys.stderr, flush=True)
    _HELD[master] = partial(_release_pty, slave)
    return master


def _release_pty(slave: int) -> None:
    """Close the monitor's hold on a pty's slave once a reader still attached has taken what was
    written: closing the master hangs the slave up, and the kernel then drops its unread input.
    Waits while what waits on the slave keeps moving (someone reads), at most PTY_DRAIN_S; not
    at all once it stands still for PTY_IDLE_S (nobody reads)."""
    deadline, waiting, still_since = time.monotonic() + PTY_DRAIN_S, _unread(slave), time.monotonic()
    while waiting and time.monotonic() < deadline and time.monotonic() - still_since < PTY_IDLE_S:
        time.sleep(PTY_POLL_S)
        now = _unread(slave)
        if now != waiting:
            waiting, still_since = now, time.monotonic()
    os.close(slave)


def _unread(tty: int) -> int:
    """Bytes waiting to be read on ``tty`` (0 if it cannot say)."""
    try:
        return struct.unpack("i", fcntl.ioctl(tty, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def open_console() -> int:
    """The terminal ``sddf run`` runs in (its stdin) in :func:`console_mode`; when stdin is not a
    terminal this process owns the foreground of, its stdout and stdin (:func:`open_stdio`)."""
    if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
        return open_stdio()
    return open_raw(os.ttyname(0), console_mode)


def open_stdio(read_input: bool = True) -> int:
    """A serial device relayed to this process's stdout and, with ``read_input``, from its stdin
    (never a terminal's, which a background job must not read): one end of a socket pair for the
    driver; a :class:`StdioRelay` thread copies the other. So ``sddf run SYSTEM > log`` keeps the
    console's output, and ``… < keys`` types into it; a blocked stdout holds the driver back
    (nothing is lost)."""
    device, relay_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    device.setblocking(False)
    relay = StdioRelay(relay_end, read_input=read_input and not os.isatty(0))
    relay.start()
    fd = device.detach()
    _HELD[fd] = partial(relay.finish, fd)
    return fd


class StdioRelay(threading.Thread):
    """Copies the console's output from ``sock`` to fd 1 and, with ``read_input``, fd 0 to ``sock``,
    until the device's side shuts down its output (:meth:`finish`) and all of it is written."""

    def __init__(self, sock: socket.socket, read_input: bool) -> None:
        super().__init__(name="serial-stdio", daemon=True)
        self.sock = sock
        self.read_input = read_input

    def run(self) -> None:
        with self.sock, selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            if self.read_input:
                selector.register(0, selectors.EVENT_READ)
            stdout_open = True
            while True:
                for key, _ in selector.select():
                    if key.fileobj is not self.sock:
                        if not self._pass_input():
                            selector.unregister(0)  # input is over; output goes on
                        continue
                    data = self.sock.recv(RELAY_CHUNK)
                    if not data:
                        return
                    if stdout_open:
                        stdout_open = _write_all(1, data)

    def _pass_input(self) -> bool:
        """Pass what stdin has to the device; False once stdin or the device is done with input."""
        try:
            data = os.read(0, RELAY_CHUNK)
            self.sock.sendall(data)
        except OSError:
            return False
        return bool(data)

    def finish(self, device: int) -> None:
        """The device ``device`` is done (its driver stopped): close it both ways, let the relay
        write the output left, and wait for it (at most ``GUARDIAN_EXIT_S``)."""
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(device)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        self.join(GUARDIAN_EXIT_S)


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to ``fd`` (blocking); False if ``fd`` is gone (its reader left)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True


def release(fd: int) -> None:
    """Give back what the serial device ``fd`` holds (a terminal's termios, a pty's slave); the
    caller then closes ``fd``. Nothing for any other fd."""
    done = _HELD.pop(fd, None)
    if done is not None:
        done()
