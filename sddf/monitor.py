"""The monitor: builds a system's regions and channels, runs each PD as a process, watches them.

It is the only part of pysddf that starts processes. Each PD gets exactly the fds its
description grants (``pass_fds``), a fault pipe, and dies with the monitor. A PD that raises,
exits or is killed is reported as "PD <name> faulted: <reason>" with its traceback, then its
policy applies: stop the system (default) or restart it with backoff, a bounded number of
times. Its control socket (:mod:`sddf.control`) serves ``status``, ``counters``, ``restart``,
``swap``, ``queues`` and ``stop``. Regions are memfds by default; with ``shm="posix"`` they are
named POSIX regions (``/sddf-<monitor pid>-<region>``, announced at start) that outside tools
can open by name, at the cost of isolation: any process of the same uid can open them, PDs
included. The monitor unlinks them when it stops, and its reaper does if the monitor is killed.
Priority maps to nice and ``cpu`` to affinity; ``budget``/``period`` are exported to the
Microkit XML but not enforced on the host.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import msgpack

from sddf import atomic
from sddf.config import ChannelGrant, PdConfig, RegionGrant
from sddf.control import Reply, Request, Server, default_run_dir
from sddf.console import release as release_device
from sddf.devices import open_device
from sddf.runtime import FAULT_EXIT
from sddf.shm import Backend, Region
from sddf.channel import channel_pair
from sddf.ppc import CallPath
from sddf.ledger import ledger_size
from sddf.occupancy import occupancy
from sddf.stats import PUBLISH_SIGNAL, STATS_SIZE, heartbeat, read_stats, sequence
from sddf.system import MAX_POLL_US, Channel, ProtectionDomain, SystemDescription, load_program

STOP_GRACE_S = 1.0
CONSOLE_KINDS = ("serial.driver", "serial.virt_tx")
CONSOLE_DRAIN_S = 1.0  # at stop, how long the serial path may take to print what is queued
CONSOLE_DRAIN_POLL_S = 0.01
PARENT_ANSWER_S = 2.0
RESTART_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0
HEALTHY_S = 10.0  # a PD that ran this long before faulting starts its backoff afresh
FRESH_WAIT_S = 1.0  # how long a fresh ``counters`` request waits for the PDs to publish
FRESH_POLL_S = 0.002
SWAP_LOAD_S = 10.0  # loading a swap's new program (in a child process) may take this long
SWAP_INIT_S = 5.0   # and its new PD this long to get past init before the swap is rolled back
WATCHDOG_LOOKS = 4  # how often per watchdog period the monitor looks at a PD's heartbeat


def log_to_stderr(msg: str) -> None:
    """One write per message, so lines from the monitor and its PDs never interleave mid-line."""
    os.write(2, (msg + "\n").encode())


@dataclass
class Restarts:
    """A PD's restart policy, as a supervisor (systemd's start limit) keeps it: at most
    ``limit`` restarts within any ``window_s``; the first fault in a row restarts at once, and the
    delay then doubles from RESTART_BACKOFF_S with each further fault in a row, up to
    MAX_BACKOFF_S, and starts afresh once the PD ran HEALTHY_S without faulting or an operator
    restarted it."""

    limit: int
    window_s: float
    recent: list[float] = field(default_factory=list)  # when the restarts within the window were granted
    streak: int = 0  # faults in a row without a healthy run between them
    total: int = 0

    def after_fault(self, now: float, started_at: float) -> float | None:
        """The delay before restarting a PD (started at ``started_at``) that faulted at ``now``,
        or None once it has used up its restarts within the window."""
        self.recent = [t for t in self.recent if t > now - self.window_s]
        if len(self.recent) >= self.limit:
            return None
        if now - started_at >= HEALTHY_S:
            self.streak = 0
        # the first fault of a streak restarts at once (a PD's restart loses what arrives meanwhile)
        delay = min(RESTART_BACKOFF_S * 2 ** (self.streak - 1), MAX_BACKOFF_S) if self.streak else 0.0
        self.streak += 1
        self.recent.append(now)
        self.total += 1
        return delay

    def requested(self) -> None:
        """An operator restarted the PD: its next fault starts the backoff afresh."""
        self.streak = 0


@dataclass
class PdState:
    """What the monitor knows about one running PD."""

    pd: ProtectionDomain
    config: PdConfig
    program: str
    proc: subprocess.Popen | None = None
    pidfd: int = -1
    fault_read: int = -1
    state: str = "stopped"
    stats: Region | None = None
    stats_at_spawn: int = 0  # its stats page's sequence when it was spawned: unchanged while it starts
    ledger: Region | None = None  # kept across its restarts (sddf.ledger)
    restarts: Restarts = field(default_factory=lambda: Restarts(0, 1.0))  # the monitor sets the PD's own
    restart_at: float | None = None
    expected_exit: bool = False
    last_fault: str = ""
    started: list[float] = field(default_factory=list)
    beat: int = 0  # its heartbeat when last looked at, and since when it has not moved
    beat_since: float = 0.0
    killed_for: str = ""  # why the monitor killed it (the watchdog), reported as its fault


class Monitor:
    """Runs one SystemDescription until it is stopped."""

    def __init__(self, sdf: SystemDescription, log: Callable[[str], None] | None = None,
                 devices: Callable[[str], int] = open_device, run_dir: str | None = None,
                 shm: Backend = "memfd", poll_us: int | None = None) -> None:
        """``devices`` opens the host device an irq source names (``sddf.testing`` fakes them);
        the control socket goes in ``run_dir`` (default: :func:`sddf.control.default_run_dir`);
        ``shm`` is the backend of the system's memory regions; ``poll_us``, if given, is every
        PD's bounded poll in place of its own (``ProtectionDomain.poll_us``)."""
        sdf.check()
        #: the serial path (drivers, virt_tx): stopped last, once the others' output is printed (a
        #: swap keeps a PD's kind)
        self._console_pds = {pd.name for pd in sdf.pds if load_program(pd.program).kind in CONSOLE_KINDS}
        self.sdf = sdf
        if poll_us is not None and not 0 <= poll_us <= MAX_POLL_US:
            raise ValueError(f"poll_us {poll_us} must be in [0, {MAX_POLL_US}]")
        self.poll_us = poll_us
        self.log = log or log_to_stderr
        self._open_device = devices
        self.run_dir = default_run_dir() if run_dir is None else run_dir
        self.shm = shm
        self.regions: dict[str, Region] = {}
        self._fds: list[int] = []          # fds the monitor owns on behalf of its PDs
        self._sockets: list[socket.socket] = []
        self._calls: list[CallPath] = []
        self._fault_sockets: dict[str, socket.socket] = {}  # a parent PD's end for its children's faults
        self.pds: dict[str, PdState] = {}
        self._epoll = select.epoll()
        self._by_fd: dict[int, Callable[[], None]] = {}
        self._control: Server | None = None
        self._stopping = False
        self.exit_code = 0

    # ---- building -----------------------------------------------------------------------
    def build(self) -> None:
        """Create every region, channel and device, and each PD's config."""
        for mr in self.sdf.regions:
            region = self.regions[mr.name] = Region.create(mr.name, mr.size, self.shm)
            if region.posix_name is not None:
                self.log(f"monitor: memory region {mr.name!r} is shared as {region.posix_name}")
        configs = {pd.name: PdConfig(pd.name, pd.program, pd.priority, pd.cpu, -1, app=dict(pd.config),
                                     allow=list(pd.allow), memory_bytes=pd.memory_bytes,
                                     poll_us=pd.poll_us if self.poll_us is None else self.poll_us)
                   for pd in self.sdf.pds}
        for pd in self.sdf.pds:
            cfg = configs[pd.name]
            for m in pd.maps:
                region = self.regions[m.region.name]
                fd = region.fd if m.perms == "rw" else self._own(region.readonly_fd())
                cfg.regions[m.local_name] = RegionGrant(fd, region.size, m.perms == "rw", m.region.io_addr)
        for ch in self.sdf.channels:
            self._wire_channel(ch, configs)
        for irq in self.sdf.irqs:
            configs[irq.pd.name].irqs[irq.id] = self._own(self._open_device(irq.source))
        for pd in self.sdf.pds:
            if pd.children:
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self._sockets += [mine, theirs]
                self._fault_sockets[pd.name] = mine
                configs[pd.name].child_faults_fd = theirs.fileno()
        for pd in self.sdf.pds:
            stats = Region.create(f"stats:{pd.name}", STATS_SIZE)
            ledger = Region.create(f"ledger:{pd.name}", ledger_size(pd.ledger_words))
            configs[pd.name].stats_fd, configs[pd.name].ledger_fd = stats.fd, ledger.fd
            configs[pd.name].ledger_words = pd.ledger_words
            self.pds[pd.name] = PdState(pd, configs[pd.name], pd.program, stats=stats, ledger=ledger,
                                        restarts=Restarts(pd.max_restarts, pd.restart_window_s))

    def _wire_channel(self, ch: Channel, configs: dict[str, PdConfig]) -> None:
        """A channel's notification fds for both ends, and its PPC call path if it has PPC."""
        end_a, end_b = channel_pair()
        self._fds += [end_a.recv_eventfd, end_a.send_eventfd, end_a.words_fd,
                      end_b.recv_eventfd, end_b.send_eventfd, end_b.words_fd]
        call_a = call_b = None
        if ch.pp_a or ch.pp_b:  # validation allows one direction only (into the higher priority)
            caller, callee = (ch.pd_a, ch.pd_b) if ch.pp_a else (ch.pd_b, ch.pd_a)
            path = CallPath(caller.name, callee.name)
            self._calls.append(path)
            call_a, call_b = ((path.caller_fds(), path.callee_fds()) if ch.pp_a
                              else (path.callee_fds(), path.caller_fds()))
        configs[ch.pd_a.name].channels[ch.pd_a_id] = ChannelGrant(
            end_a.recv_eventfd, end_a.send_eventfd, end_a.words_fd, end_a.recv_offset,
            end_a.send_offset, ch.pd_b.name, call_a, ch.pp_a, ch.pp_b)
        configs[ch.pd_b.name].channels[ch.pd_b_id] = ChannelGrant(
            end_b.recv_eventfd, end_b.send_eventfd, end_b.words_fd, end_b.recv_offset,
            end_b.send_offset, ch.pd_a.name, call_b, ch.pp_b, ch.pp_a)

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    # ---- processes ----------------------------------------------------------------------
    def start(self) -> None:
        """Build (if needed), open the control socket and start every PD, highest priority first."""
        if not self.pds:
            self.build()
        self._open_control()
        for st in sorted(self.pds.values(), key=lambda s: -s.pd.priority):
            self._spawn(st)

    def _spawn(self, st: PdState) -> None:
        fault_read, fault_write = os.pipe2(os.O_CLOEXEC)
        st.config.fault_fd = fault_write
        st.config.program = st.program
        if st.stats is not None:
            st.stats_at_spawn = sequence(st.stats.view)
        cfg_fd = st.config.to_memfd()
        try:
            st.proc = subprocess.Popen(
                [sys.executable, "-m", "sddf.runtime", str(cfg_fd)],
                pass_fds=st.config.fds() + [cfg_fd], stdin=subprocess.DEVNULL,
                # its own session (so its own group: whatever it starts is killed with it, _collect);
                # outside the monitor's session a driver may read the console terminal (no SIGTTIN)
                start_new_session=True)
        finally:
            os.close(cfg_fd)
            os.close(fault_write)
        st.fault_read = fault_read
        st.pidfd = os.pidfd_open(st.proc.pid)
        st.state, st.expected_exit, st.restart_at = "running", False, None
        st.started.append(time.monotonic())
        if st.stats is not None:  # the watchdog counts from now (a dead predecessor's beat may be odd)
            st.beat, st.beat_since = heartbeat(st.stats.view), st.started[-1]
        self._watch(st.pidfd, lambda st=st: self._reap(st))

    def _watch(self, fd: int, handler: Callable[[], None]) -> None:
        self._by_fd[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def _unwatch(self, fd: int) -> None:
        self._by_fd.pop(fd, None)
        self._epoll.unregister(fd)

    def _collect(self, st: PdState) -> tuple[str, str]:
        """Wait for a PD's ended process, killing every process it started (its process group:
        signalled before the PD is reaped, so the group's number cannot have been reused); release
        its pidfd and fault pipe; (reason, fault report)."""
        assert st.proc is not None
        try:
            os.killpg(st.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = st.proc.wait()
        self._unwatch(st.pidfd)
        os.close(st.pidfd)
        report = _drain(st.fault_read).decode(errors="replace").strip()
        st.pidfd = st.fault_read = -1
        return describe_exit(status, report), report

    def _reap(self, st: PdState) -> None:
        reason, report = self._collect(st)
        if st.expected_exit or self._stopping:
            st.state = "stopped"
            return
        reason, st.killed_for = st.killed_for or reason, ""
        st.last_fault = reason
        st.state = "faulted"
        self._log_fault(st, reason, report)
        self._fail_calls_into(st.pd.name)
        if st.pd.parent is not None:
            self._ask_parent(st, reason)
            return
        now = time.monotonic()
        delay = st.restarts.after_fault(now, st.started[-1]) if st.pd.fault_policy == "restart" else None
        if delay is not None:
            st.restart_at = now + delay
            st.state = "restarting"
            self.log(f"PD {st.pd.name}: restart {len(st.restarts.recent)}/{st.pd.max_restarts} in {delay:.1f}s")
        else:
            if st.pd.fault_policy == "restart":
                self.log(f"PD {st.pd.name}: gave up after {len(st.restarts.recent)} restarts within "
                         f"{st.pd.restart_window_s:g}s; stopping the system")
            self.exit_code = 1
            self.stop()

    def _log_fault(self, st: PdState, reason: str, report: str) -> None:
        self.log(f"PD {st.pd.name} faulted: {reason}" + (f"\n{report}" if report else ""))

    def _watchdog(self, now: float) -> float | None:
        """Kill each running PD whose heartbeat has stayed odd (in a handler) for longer than its
        ``watchdog_s``: its fault (and so its policy) follows from the kill. Returns when to look
        again (None: no PD has a watchdog)."""
        looks = []
        for st in self.pds.values():
            limit = st.pd.watchdog_s
            if limit is None or st.state != "running" or st.proc is None or st.stats is None:
                continue
            beat = heartbeat(st.stats.view)
            if beat != st.beat:
                st.beat, st.beat_since = beat, now
            elif beat & 1 and now - st.beat_since > limit and not st.killed_for:
                st.killed_for = f"watchdog: stuck in one handler for over {limit:g} s"
                st.proc.kill()
            looks.append(now + limit / WATCHDOG_LOOKS)
        return min(looks, default=None)

    def _fail_calls_into(self, callee: str) -> None:
        """Answer "callee faulted" to each caller whose request the dead ``callee`` had taken.

        A request not yet taken is left for the restarted callee to answer."""
        for path in self._calls:
            if path.callee == callee and path.fail_taken_call():
                self.log(f"PD {path.caller}: its call into {callee} failed (callee faulted)")

    def _ask_parent(self, st: PdState, reason: str) -> None:
        """Microkit's fault handler: the parent's ``fault()`` decides whether the child restarts."""
        parent = st.pd.parent
        assert parent is not None
        child_id = next(cid for cid, child in parent.children.items() if child is st.pd)
        sock = self._fault_sockets[parent.name]
        restart = False
        if self.pds[parent.name].state == "running":
            try:
                sock.settimeout(PARENT_ANSWER_S)
                sock.sendall(msgpack.packb([child_id, reason]))
                restart = bool(msgpack.unpackb(sock.recv(64)))
            except (OSError, ValueError) as exc:
                self.log(f"PD {parent.name} did not answer for its child {st.pd.name}: {exc}")
        if restart and st.restarts.after_fault(time.monotonic(), st.started[-1]) is not None:
            st.restart_at = time.monotonic()  # the parent decided: no backoff
            st.state = "restarting"
            self.log(f"PD {st.pd.name}: restarted by its parent {parent.name} "
                     f"({len(st.restarts.recent)}/{st.pd.max_restarts})")
        else:
            self.log(f"PD {st.pd.name}: left stopped by its parent {parent.name}")

    def _terminate(self, st: PdState) -> None:
        """Stop one PD's process (SIGTERM, then SIGKILL after a grace period) and reap it."""
        if st.proc is None or st.pidfd < 0:
            return
        st.expected_exit = True
        st.proc.terminate()
        try:
            st.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            st.proc.kill()
        self._reap(st)

    # ---- control ------------------------------------------------------------------------
    def restart(self, name: str, kill_at_write: int = 0) -> None:
        """Stop ``name`` between two handlers and start it again; with ``kill_at_write`` the new
        instance kills itself just before that write to shared memory (sddf.faults), a fault
        its policy then handles."""
        if not isinstance(kill_at_write, int) or kill_at_write < 0:
            raise ValueError(f"kill_at_write must be a whole number ≥ 0, not {kill_at_write!r}")
        st = self._state(name)
        self._terminate(st)
        st.restarts.requested()
        st.config.kill_at_write = kill_at_write
        try:
            self._spawn(st)
        finally:
            st.config.kill_at_write = 0  # only this instance: its restarts run normally
        armed = f", to be killed before its write {kill_at_write} to shared memory" if kill_at_write else ""
        self.log(f"PD {name}: restarted by request{armed}")

    def swap(self, name: str, program: str) -> None:
        """Replace ``name``'s program by another of the same component kind; old process first.

        The new program is loaded in a child process (an import that exits or hangs cannot take
        the monitor with it); a new PD that faults in ``init`` or does not finish it within
        SWAP_INIT_S is replaced by the old program again, and the swap fails saying why."""
        st = self._state(name)
        old_kind, new_kind = program_kind(st.program), program_kind(program)  # neither imported here
        if old_kind != new_kind:
            raise ValueError(f"cannot swap PD {name!r} from {st.program!r} (kind {old_kind!r}) "
                             f"to {program!r} (kind {new_kind!r}): kinds differ")
        old_program = st.program
        self._terminate(st)
        st.program = program
        self._spawn(st)
        problem = self._await_init(st)
        if problem is None:
            self.log(f"PD {name}: swapped to {program}")
            return
        st.program = old_program
        self._spawn(st)
        self.log(f"PD {name}: swap to {program} failed ({problem}); back to {old_program}")
        raise RuntimeError(f"PD {name!r}: {program!r} {problem}; rolled back to {old_program!r}")

    def _await_init(self, st: PdState) -> str | None:
        """Wait (at most SWAP_INIT_S) until a just spawned PD is past ``init`` (its first publish of
        counters); None if it is, else what went wrong (its process is then gone)."""
        assert st.proc is not None and st.stats is not None
        deadline = time.monotonic() + SWAP_INIT_S
        while time.monotonic() < deadline:
            if st.proc.poll() is not None:
                st.expected_exit = True
                reason, report = self._collect(st)
                self._log_fault(st, reason, report)
                return f"faulted in init: {reason}"
            if sequence(st.stats.view) != st.stats_at_spawn:
                return None
            time.sleep(FRESH_POLL_S)
        self._terminate(st)
        return f"did not finish init within {SWAP_INIT_S:g} s"

    def status(self) -> list[dict]:
        return [{"name": st.pd.name, "program": st.program, "state": st.state,
                 "pid": st.proc.pid if st.proc and st.pidfd >= 0 else None,
                 "priority": st.pd.priority, "restarts": st.restarts.total, "last_fault": st.last_fault}
                | _wakeups(st) for st in self.pds.values()]

    def _state(self, name: str) -> PdState:
        st = self.pds.get(name)
        if st is None:
            raise KeyError(f"no PD named {name!r} in system {self.sdf.name!r}")
        return st

    def counters(self, fresh: bool = False) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
        """Each PD's published counters; with ``fresh``, each running PD is asked to publish now
        first. Also the PDs whose counters are not fresh, each with why."""
        stale = self._refresh_counters() if fresh else {}
        return {name: read_stats(st.stats.view) if st.stats else {} for name, st in self.pds.items()}, stale

    def _refresh_counters(self) -> dict[str, str]:
        """Send every running PD PUBLISH_SIGNAL and wait (at most FRESH_WAIT_S) until each has
        published; return the PDs that did not, each with why."""
        deadline = time.monotonic() + FRESH_WAIT_S
        stale: dict[str, str] = {}
        waiting: dict[str, tuple[memoryview, int]] = {}  # PD -> (its stats page, sequence when asked)
        for name, st in self.pds.items():
            if st.state != "running" or st.proc is None or st.stats is None:
                stale[name] = f"not running ({st.state})"
                continue
            if sequence(st.stats.view) == st.stats_at_spawn:
                stale[name] = "starting (not yet past init)"
                continue
            waiting[name] = (st.stats.view, sequence(st.stats.view))
            st.proc.send_signal(PUBLISH_SIGNAL)
        while waiting and time.monotonic() < deadline:
            time.sleep(FRESH_POLL_S)
            waiting = {name: (page, seq) for name, (page, seq) in waiting.items() if sequence(page) == seq}
        return stale | {name: f"did not publish within {FRESH_WAIT_S:g} s" for name in waiting}

    def _open_control(self) -> None:
        self._control = Server(self.run_dir, self.sdf.name, self._command)
        self._watch(self._control.fileno(), self._control.serve)

    def _command(self, request: Request) -> tuple[Reply, list[int]]:
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "system": self.sdf.name, "pds": self.status()}, []
        if cmd == "restart":
            self.restart(request["pd"], request.get("kill_at_write", 0))
            return {"ok": True}, []
        if cmd == "swap":
            self.swap(request["pd"], request["program"])
            return {"ok": True}, []
        if cmd == "counters":
            counters, stale = self.counters(fresh=bool(request.get("fresh")))
            return {"ok": True, "counters": counters, "stale": stale}, []
        if cmd == "stop":
            self.stop()
            return {"ok": True}, []
        if cmd == "queues":
            names = sorted({q.region for q in self.sdf.queues})
            queues = [vars(q) | {"fd_index": names.index(q.region)} for q in self.sdf.queues]
            regions = [self.regions[n] for n in names]
            ledgers = []
            for info in self.sdf.ledgers:  # read-only maps of the ledgers whose words tools read
                st = self._state(info.pd)
                assert st.ledger is not None
                ledgers.append(vars(info) | {"words": st.pd.ledger_words, "fd_index": len(regions)})
                names.append(st.ledger.name)
                regions.append(st.ledger)
            sizes = {n: r.size for n, r in zip(names, regions)}
            return ({"ok": True, "queues": queues, "ledgers": ledgers, "sizes": sizes, "regions": names},
                    [r.readonly_fd() for r in regions])
        raise ValueError(f"unknown command {cmd!r} (known: status, counters, restart, swap, stop, queues)")

    # ---- running ------------------------------------------------------------------------
    def run(self, duration: float | None = None) -> int:
        """Start the system and serve until stopped, SIGINT/SIGTERM, or ``duration`` seconds."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
        self._watch(wake_r, lambda: self._signalled(wake_r))
        deadline = None if duration is None else time.monotonic() + duration
        try:
            self.start()
            while not self._stopping:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.stop()
                    break
                due = [s.restart_at for s in self.pds.values() if s.restart_at is not None]
                control = self._control.next_deadline() if self._control is not None else None
                watch = self._watchdog(now)
                wakes = due + [t for t in (deadline, control, watch) if t is not None]
                timeout = max(0.0, min(wakes) - now) if wakes else -1
                for fd, _ in self._epoll.poll(timeout):
                    handler = self._by_fd.get(fd)
                    if handler is not None and not self._stopping:
                        handler()
                if control is not None and self._control is not None:
                    self._control.serve()  # drops clients that stayed silent too long
                now = time.monotonic()
                for st in self.pds.values():
                    if st.restart_at is not None and st.restart_at <= now and not self._stopping:
                        self._spawn(st)
                        self.log(f"PD {st.pd.name}: restarted")
        finally:
            self.stop()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(wake_r)
            os.close(wake_w)
            self.close()
        return self.exit_code

    def _signalled(self, wake_r: int) -> None:
        signums = os.read(wake_r, 64)
        self.log(f"monitor: got {', '.join(signal.Signals(s).name for s in signums)}; stopping")
        self.stop()

    def stop(self) -> None:
        """Stop every PD: SIGTERM, then SIGKILL whatever is left after a grace period."""
        if self._stopping:
            return
        self._stopping = True
        live = [st for st in self.pds.values() if st.proc is not None and st.pidfd >= 0]
        console = [st for st in live if st.pd.name in self._console_pds]
        self._terminate_all([st for st in live if st not in console])
        if console:
            self._drain_consoles()
            self._terminate_all(console)

    def _terminate_all(self, states: list[PdState]) -> None:
        """Stop these PDs together: SIGTERM, then SIGKILL whatever is left after a grace period."""
        for st in states:
            st.expected_exit = True
            st.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for st in states:
            try:
                st.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                st.proc.kill()
            self._reap(st)

    def _drain_consoles(self) -> None:
        """Let the serial path (still running) print what the stopped PDs wrote: wait until every
        serial queue is empty, at most ``CONSOLE_DRAIN_S``."""
        queues = [(atomic.pointer(self.regions[q.region].view), q.offset) for q in self.sdf.queues
                  if q.kind == "serial"]
        deadline = time.monotonic() + CONSOLE_DRAIN_S
        while any(occupancy(ptr, offset, "serial") for ptr, offset in queues) and time.monotonic() < deadline:
            time.sleep(CONSOLE_DRAIN_POLL_S)

    def close(self) -> None:
        """Release every fd, region and the control socket (after :meth:`stop`)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        for fd in self._fds:
            release_device(fd)  # a serial device's terminal restored, its pty slave closed
            os.close(fd)
        self._fds.clear()
        for s in self._sockets:
            s.close()
        self._sockets.clear()
        for path in self._calls:
            path.close()
        self._calls.clear()
        for region in self.regions.values():
            region.close()
        self.regions.clear()
        for st in self.pds.values():
            for page in (st.stats, st.ledger):
                if page is not None:
                    page.close()
            st.stats = st.ledger = None
        self._epoll.close()


def _drain(fd: int) -> bytes:
    """What a dead PD wrote to its fault pipe, without waiting for anyone else holding it open."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def _wakeups(st: PdState) -> dict[str, int]:
    """A PD's wake-ups and how many found no work, as it last published them."""
    counters = read_stats(st.stats.view) if st.stats is not None else {}
    return {key: counters.get(key, 0) for key in ("wakeups", "unproductive_wakeups")}


def program_kind(program: str) -> str:
    """The component kind of ``program``, loaded in a child process bounded by SWAP_LOAD_S (so an
    import that exits, hangs or crashes is the swap's failure, not the monitor's)."""
    code = "import sys; from sddf.system import load_program; print(load_program(sys.argv[1]).kind)"
    try:
        done = subprocess.run([sys.executable, "-c", code, program], capture_output=True, text=True,
                              timeout=SWAP_LOAD_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ValueError(f"loading {program!r} took longer than {SWAP_LOAD_S:g} s") from None
    if done.returncode != 0 or not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ValueError(f"cannot load {program!r}: {last}")
    return done.stdout.strip().splitlines()[-1]


def describe_exit(status: int, report: str) -> str:
    """A one-line reason for a PD's exit from its status and fault report."""
    if status == FAULT_EXIT and report:
        return report.splitlines()[0]
    if status < 0:
        name = signal.Signals(-status).name
        hint = " (memory fault: a write to a read-only map or a bad pointer?)" if name == "SIGSEGV" else ""
        return f"killed by {name}{hint}"
    return f"exited with status {status}"
