"""Soak: UDP echo load on the echo system while its PDs are SIGKILLed at random, every few seconds.

The system is bench/systems/echo_n.py with two echo clients, both behind copiers (sDDF's echo
example; ``--direct``: both direct) and every PD restarted when it faults (``ECHO_RESTART=1``),
run by ``sddf run`` in a network namespace made here, as bench/echo.py runs it (its helpers are
imported). A load process inside the namespace (this file, ``--worker``) sends a steady UDP echo
load to both clients (``--rate`` requests/s each), counts the answers and reports every gap of
more than GAP_S between two answers of a client. Meanwhile, every 2-5 s (``--seed``ed; counted
from the end of the previous outage) one PD chosen at random among eth_driver, net_virt_rx,
net_virt_tx, the copiers and the clients gets SIGKILL (its pid from the monitor's ``status``).
After each kill the soak waits (at most RECOVERY_BOUND_S) until the monitor runs the PD again and
every client on its path answers again: the kill is *survived* then, and its *outage* is the
longest gap between two answers of those clients around it. At the end the load stops, the
system goes quiet and ``sddf.tools.audit.settle`` looks at every buffer pool: a buffer missing
or doubled there is leaked. ``--audit-each`` also pauses the load and audits after every kill,
so a leak is pinned on the kill that caused it.

Printed: per component type the kills, the restarts the monitor counted, how many were survived,
worst and median outage (and with ``--audit-each`` the buffers leaked by its kills); totals:
requests sent, answered and lost, restarts, buffers leaked per pool, whether the system still
runs; any refusal a PD logged, by the kill it followed. ``--json FILE``: ratios
``buffers_leaked`` (target 0), ``survived_fraction`` (target 1), ``worst_outage_s``. Into
``--out``: soak.png, the outage of every kill over time; soak_monitor.log, the monitor's log.
An outage includes the monitor's restart backoff: none for a first fault, then 0.1 s, 0.2 s, …
10 s while the same PD is killed again within 10 s of its restart.

    python bench/soak.py [--quick] [--duration S] [--seed N] [--rate PPS] [--direct] [--audit-each]
                         [--kill TYPES] [--json FILE] [--out DIR]

``--kill eth_driver,copier`` kills only PDs of those types (to pin a leak on one of them).

Default 10 minutes; ``--quick`` 30 s of soak with kills every 2-4 s (< 60 s in all). Needs root
(namespaces, TAP). All traffic stays inside the namespace; the load is bounded in time (and so
in count), and the system, the load and the namespace are removed on exit, even on failure.
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib)

import argparse
import bisect
import collections
import contextlib
import errno
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from _common import Target, console, print_table

import echo  # bench/echo.py: Bench, sddf_system, process, control_in, PORT, ECHO_N
from systems import echo_n  # bench/systems/echo_n.py
from sddf import control
from sddf.tools.audit import settle
from sddf.tools.top import QueueViews

T = TypeVar("T")
SOAK = Path(__file__).resolve()
CLIENTS = 2
RATE_PPS = 2_000                # requests/s offered to each client
DURATION_S, QUICK_DURATION_S = 600.0, 30.0
KILL_EVERY_S, QUICK_KILL_EVERY_S = (2.0, 5.0), (2.0, 4.0)
SEED = 1
KILLABLE = ("eth_driver", "net_virt_rx", "net_virt_tx", "copier", "client")  # component types killed
TYPES = (*KILLABLE, "timer")    # the timer is not killed, but a restart of it is reported
RECOVERY_BOUND_S = 15.0         # a kill is survived if the path answers again within this
POLL_S = 0.01                   # how often the soak looks at the monitor and the load meanwhile
AUDIT_SETTLE_S = 5.0
QUIET_S, QUIET_MAX_S = 0.3, 5.0  # before an audit: no answer for QUIET_S (waiting at most QUIET_MAX_S)
FAULT_LINE = re.compile(r"PD (\S+) faulted: ")        # the monitor's log
REFUSED_LINE = re.compile(r"(\S+): refused: (.*)")  # a PD's (Component.refuse)
REFUSAL_SHOWN = 90                                 # characters of a refusal message in the table
LOAD_MARGIN_S = 120.0           # the load stops by itself this long after the soak should have ended
# the load process (--worker)
REQUEST = struct.Struct("<QI")  # sequence number, client index
PAYLOAD_BYTES = 64
TICK_S = 0.001
MAX_BURST = 64                  # requests per client per tick at most (no flood after a stall)
HEARTBEAT_S = 0.05
GAP_S = 0.02                    # gaps between two answers longer than this are reported
LOST_WINDOW_S = 0.5             # an unanswered request sent this close to a kill's outage is charged to it
DRAIN_S = 1.0
RCVBUF = 4 << 20


# ---- the load process (runs inside the namespace) ---------------------------------------------
@dataclass
class Flow:
    """The requests to one client and what came back."""

    sock: socket.socket
    last: float                 # when its last answer came (or the load started or resumed)
    sent: int = 0
    unsent: int = 0             # requests the host could not send (no route, no neighbour, …)
    received: int = 0
    duplicates: int = 0
    bad: int = 0                # answers that are no answer to a request of this flow
    errnos: collections.Counter[str] = field(default_factory=collections.Counter)
    credit: float = 0.0
    seen: bytearray = field(default_factory=bytearray)
    sent_at: array = field(default_factory=lambda: array("d"))  # when each request was sent

    def failed(self, exc: OSError) -> None:
        self.errnos[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def open_flow(ip: str, now: float) -> Flow:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.connect((ip, echo.PORT))
    sock.setblocking(False)
    return Flow(sock, now)


def send_due(flow: Flow, index: int, rate: float, dt: float) -> None:
    """Send what ``rate`` makes due over the last ``dt`` seconds (at most MAX_BURST)."""
    flow.credit = min(flow.credit + rate * dt, MAX_BURST)
    padding = bytes(PAYLOAD_BYTES - REQUEST.size)
    while flow.credit >= 1:
        flow.credit -= 1
        try:
            flow.sock.send(REQUEST.pack(flow.sent, index) + padding)
        except OSError as exc:
            flow.unsent += 1
            flow.failed(exc)
            continue
        flow.sent += 1
        flow.seen.append(0)
        flow.sent_at.append(time.monotonic())


def receive(flow: Flow, index: int) -> None:
    """Take every answer waiting on ``flow``; report a gap before one that came after GAP_S."""
    while True:
        try:
            data = flow.sock.recv(2048)
        except BlockingIOError:
            return
        except OSError as exc:  # an ICMP error the kernel reports on the socket
            flow.failed(exc)
            continue
        now = time.monotonic()
        if now - flow.last > GAP_S:
            emit({"gap": index, "start": flow.last, "end": now})
        flow.last = now
        seq, who = REQUEST.unpack_from(data) if len(data) >= REQUEST.size else (-1, -1)
        if who != index or not 0 <= seq < flow.sent:
            flow.bad += 1
        elif flow.seen[seq]:
            flow.duplicates += 1
        else:
            flow.seen[seq] = 1
            flow.received += 1


def totals(flows: Sequence[Flow]) -> dict[str, list]:
    return {"last": [f.last for f in flows], **{what: [getattr(f, what) for f in flows] for what in
                                                  ("sent", "unsent", "received", "duplicates", "bad", "errnos")}}


def worker(dsts: Sequence[str], rate: float, max_s: float) -> int:
    """The load: ``rate`` requests/s to each of ``dsts`` until SIGTERM (or ``max_s``), then drain.
    SIGUSR1 pauses sending, SIGUSR2 resumes it. Prints JSON lines: heartbeats, gaps, the totals."""
    state = {"paused": False, "resumed": False, "stop": False}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the soak's to handle
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    signal.signal(signal.SIGUSR1, lambda *_: state.update(paused=True))
    signal.signal(signal.SIGUSR2, lambda *_: state.update(paused=False, resumed=True))
    start = prev = beat = time.monotonic()
    flows = [open_flow(ip, start) for ip in dsts]
    selector = selectors.DefaultSelector()
    for i, flow in enumerate(flows):
        selector.register(flow.sock, selectors.EVENT_READ, i)
    stop_at = start + max_s
    while True:
        now = time.monotonic()
        if (state["stop"] or now >= stop_at) and stop_at > now + DRAIN_S:
            stop_at, state["paused"] = now + DRAIN_S, True
        if now >= stop_at:
            break
        if state["resumed"]:  # a pause is no outage
            state["resumed"] = False
            for flow in flows:
                flow.last = now
        for i, flow in enumerate(flows):
            if not state["paused"]:
                send_due(flow, i, rate, now - prev)
        prev = now
        for key, _ in selector.select(TICK_S):
            receive(flows[key.data], key.data)
        if now >= beat + HEARTBEAT_S:  # stamped after the answers it counts
            beat = now
            emit({"t": time.monotonic(), **totals(flows)})
    lost_at = [[round(f.sent_at[i], 4) for i in range(f.sent) if not f.seen[i]] for f in flows]
    emit({"final": True, "t": time.monotonic(), "lost_at": lost_at, **totals(flows)})
    return 0


# ---- the load, as the soak sees it ------------------------------------------------------------
class Load:
    """Reads the load process's reports from its log; pauses, resumes and stops it."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log
        self._file = log.open()
        self._partial = ""
        self.now = 0.0                      # the time of its last heartbeat
        self.last: list[float] = [0.0] * CLIENTS
        self.gaps: list[tuple[int, float, float]] = []
        self.latest: dict = {}
        self.final: dict | None = None
        self.noise: list[str] = []          # lines that are no report (a traceback)

    def poll(self) -> None:
        """Take in what the load reported since the last look."""
        self._partial += self._file.read()
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                self.noise.append(line)
                continue
            if "gap" in record:
                self.gaps.append((record["gap"], record["start"], record["end"]))
            else:
                self.latest, self.now, self.last = record, record["t"], record["last"]
                self.final = record if record.get("final") else None

    def flowing(self) -> bool:
        """Has every client answered at all?"""
        self.poll()
        return all(self.latest.get("received", [0] * CLIENTS))

    def answered(self, clients: Sequence[int], since: float) -> bool:
        """Has every one of ``clients`` answered after ``since``?"""
        self.poll()
        return all(self.last[c] > since for c in clients)

    def quiet(self) -> bool:
        """Has no client answered for QUIET_S?"""
        self.poll()
        return bool(self.now) and self.now - max(self.last) > QUIET_S

    def outage(self, client: int, after: float, until: float) -> float:
        """The longest gap between two answers of ``client`` that ended in (after, until]."""
        return max((end - start for c, start, end in self.gaps if c == client and after < end <= until),
                   default=0.0)

    def close(self) -> None:
        self._file.close()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self) -> dict:
        """Stop sending, let the answers drain, and return the load's totals."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(DRAIN_S + echo.STOP_TIMEOUT_S)
        self.poll()
        if self.final is None:
            raise RuntimeError(f"the load process ended without its totals:\n{echo.tail(self.log)}")
        return self.final


@contextlib.contextmanager
def load(run: "echo.Running", work: Path, rate: float, max_s: float) -> Iterator[Load]:
    """The load process in ``run``'s namespace for the block, stopped and reaped after it."""
    ips = [echo_n.client_ip(i) for i in range(CLIENTS)]
    argv = run.gen_prefix + [sys.executable, str(SOAK), "--worker", "--dst", ",".join(ips),
                             "--rate", str(rate), "--max-s", str(max_s)]
    log = work / "load.log"
    with echo.process(argv, log) as proc:
        traffic = Load(proc, log)
        try:
            yield traffic
        finally:
            traffic.close()


# ---- the system under test ----------------------------------------------------------------------
class SystemDied(RuntimeError):
    """The monitor no longer answers: the system stopped."""


def run_dir_of(work: Path) -> str:
    """The run directory echo.sddf_system made under ``work`` (the one holding a control socket)."""
    found = [str(d) for d in work.iterdir() if d.is_dir() and control.running_systems(str(d))]
    if len(found) != 1:
        raise RuntimeError(f"expected one run directory with a control socket under {work}, found {found}")
    return found[0]


def status(run_dir: str) -> dict[str, dict]:
    """PD name -> its entry in the monitor's ``status``."""
    try:
        return {pd["name"]: pd for pd in echo.control_in(run_dir, {"cmd": "status"})["pds"]}
    except (control.ControlError, OSError) as exc:
        raise SystemDied(str(exc)) from exc


def kind_of(pd: str) -> str:
    """A PD's component type: ``client0_copier`` -> copier, ``client1`` -> client."""
    return "copier" if pd.endswith("_copier") else "client" if pd.startswith("client") else pd


def path_of(pd: str) -> list[int]:
    """The clients whose echoes go through ``pd``."""
    return [int(pd.removeprefix("client").removesuffix("_copier"))] if pd.startswith("client") \
        else list(range(CLIENTS))


def audit(run_dir: str) -> dict[str, dict[str, int]]:
    """Pool -> buffers, missing, doubled, foreign and leaked (missing + doubled) after settling."""
    reply, fds = control.request(run_dir, control.only_running_system(run_dir), {"cmd": "queues"})
    result = settle(QueueViews(reply, fds), AUDIT_SETTLE_S)
    return {name: {"buffers": r.buffers, "missing": len(r.missing), "doubled": len(r.doubled),
                   "foreign": len(r.foreign), "leaked": len(r.missing) + len(r.doubled)}
            for name, r in result.pools.items()}


def occupancy(run_dir: str) -> dict[str, int]:
    """Queue -> how many entries it holds now (the queues that hold any)."""
    reply, fds = control.request(run_dir, control.only_running_system(run_dir), {"cmd": "queues"})
    return {label: used for label, used, _ in QueueViews(reply, fds).rows() if used}


def leaked(pools: dict[str, dict[str, int]]) -> int:
    return sum(p["leaked"] for p in pools.values())


# ---- the soak ------------------------------------------------------------------------------------
@dataclass
class Kill:
    """One SIGKILL and what followed."""

    at_s: float                     # since the soak began
    at: float                       # time.monotonic() of the kill (the load's clock too)
    pd: str
    kind: str
    pid: int
    clients: list[int]
    survived: bool = False
    back_s: float | None = None     # kill -> the monitor runs the PD again
    outage_s: float | None = None   # the longest gap between answers of the clients on its path
    answering_at: float | None = None  # when its path answered again
    lost: int = 0                   # requests sent around it (LOST_WINDOW_S) that were not answered
    leaked: dict[str, int] = field(default_factory=dict)  # --audit-each: buffers it leaked, per pool
    queues: dict[str, int] = field(default_factory=dict)  # not survived: the queues' occupancy then


@dataclass(frozen=True)
class Plan:
    duration_s: float
    kill_every_s: tuple[float, float]
    rate: float
    seed: int
    copiers: bool
    audit_each: bool
    kinds: tuple[str, ...] = KILLABLE  # the component types killed


def until(check: Callable[[], T], deadline: float) -> T | None:
    """``check()``'s first truthy result, asked every POLL_S; None once ``deadline`` has passed."""
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(POLL_S)
    return None


def running(run_dir: str, pd: str, not_pid: int | None = None) -> dict | None:
    """``pd``'s status entry if the monitor runs it (as another process than ``not_pid``)."""
    st = status(run_dir)[pd]
    return st if st["state"] == "running" and st["pid"] not in (None, not_pid) else None


def kill_one(run_dir: str, traffic: Load, pd: str, began: float) -> Kill | None:
    """SIGKILL ``pd`` and follow it until its path answers again (or RECOVERY_BOUND_S); None if
    ``pd`` is not running (and does not run within RECOVERY_BOUND_S)."""
    target = until(lambda: running(run_dir, pd), time.monotonic() + RECOVERY_BOUND_S)
    if target is None:
        console.print(f"  [yellow]{pd} is not running ({status(run_dir)[pd]['state']}): not killed[/yellow]")
        return None
    at = time.monotonic()
    os.kill(target["pid"], signal.SIGKILL)
    kill = Kill(at - began, at, pd, kind_of(pd), target["pid"], path_of(pd))
    deadline = at + RECOVERY_BOUND_S
    if until(lambda: running(run_dir, pd, not_pid=kill.pid), deadline):
        up = time.monotonic()
        kill.back_s = up - at
        kill.survived = bool(until(lambda: traffic.answered(kill.clients, up), deadline))
        kill.answering_at = time.monotonic() if kill.survived else None
    traffic.poll()
    if kill.survived:
        kill.outage_s = max(traffic.outage(c, at, traffic.now) for c in kill.clients)
    else:  # still out: at least this long
        kill.outage_s = max(time.monotonic() - traffic.last[c] for c in kill.clients)
        kill.queues = occupancy(run_dir)
    return kill


def audit_paused(run_dir: str, traffic: Load) -> dict[str, dict[str, int]]:
    """Pause the load, wait for quiet, audit, resume."""
    traffic.pause()
    try:
        until(traffic.quiet, time.monotonic() + QUIET_MAX_S)
        return audit(run_dir)
    finally:
        traffic.resume()


def soak(run_dir: str, traffic: Load, plan: Plan) -> list[Kill]:
    """Kill PDs at random until ``plan.duration_s`` has passed; every kill, followed. The victims
    and the pauses between kills depend on ``plan.seed`` only."""
    rng = random.Random(plan.seed)
    victims = sorted(name for name in status(run_dir) if kind_of(name) in plan.kinds)
    if not victims:
        raise RuntimeError(f"the system has no PD of the types {', '.join(plan.kinds)}")
    kills: list[Kill] = []
    before = {pool: p["leaked"] for pool, p in audit(run_dir).items()} if plan.audit_each else {}
    began = time.monotonic()
    while True:
        time.sleep(rng.uniform(*plan.kill_every_s))
        if time.monotonic() - began >= plan.duration_s:
            return kills
        kill = kill_one(run_dir, traffic, rng.choice(victims), began)
        if kill is None:
            continue
        if plan.audit_each:
            now = {pool: p["leaked"] for pool, p in audit_paused(run_dir, traffic).items()}
            kill.leaked = {pool: n - before.get(pool, 0) for pool, n in now.items() if n != before.get(pool, 0)}
            before = now
        kills.append(kill)
        print_kill(kill)


def print_kill(kill: Kill) -> None:
    back = f"back in {kill.back_s:.2f} s" if kill.back_s is not None else "NOT back"
    verdict = "" if kill.survived else f" [red]not answering within {RECOVERY_BOUND_S:g} s; queues " \
                                       f"{kill.queues}[/red]"
    leak = f", leaked {kill.leaked}" if kill.leaked else ""
    console.print(f"  [dim]{kill.at_s:7.1f} s  SIGKILL {kill.pd:<15} (pid {kill.pid:>7}): {back}, "
                  f"outage {kill.outage_s:.3f} s{leak}[/dim]{verdict}")


def run_soak(plan: Plan, work: Path, log_copy: Path) -> dict:
    """Start the system and the load, soak, stop the load, audit; every figure the report needs.
    The monitor's log (with its PDs' output) is copied to ``log_copy``."""
    bench = echo.Bench(echo.QUICK, work)
    label = f"echo, {CLIENTS} clients {'behind copiers' if plan.copiers else 'direct'}, restarting"
    env = echo_n.env(CLIENTS, client="app", copiers=plan.copiers, restart=True)
    ips = [echo_n.client_ip(i) for i in range(CLIENTS)]
    with echo.sddf_system(bench, "soak", label, str(echo.ECHO_N), ips, env=env) as run:
        run_dir = run_dir_of(work)
        console.print(f"[bold]{label}[/bold]: answering on {', '.join(ips)}; soaking "
                      f"{plan.duration_s:g} s at {plan.rate:g} requests/s per client, seed {plan.seed}")
        try:
            result = soak_under_load(run, run_dir, plan, work)
            final = status(run_dir) if run.alive() and not result["died"] else {}
            pools = audit(run_dir) if final else {}
            queues = occupancy(run_dir) if final else {}
        finally:
            shutil.copyfile(run.log, log_copy)
        return result | {"pools": pools, "queues": queues, "status": final, "refusals": refusals(run.log),
                         "running": bool(final) and all(st["state"] == "running" for st in final.values()),
                         "died": result["died"] or ("" if final else f"the system stopped:\n{echo.tail(run.log)}")}


def soak_under_load(run: "echo.Running", run_dir: str, plan: Plan, work: Path) -> dict:
    """Start the load, soak, stop the load: the kills, the load's totals, why the system died."""
    with load(run, work, plan.rate, plan.duration_s + LOAD_MARGIN_S) as traffic:
        if not until(traffic.flowing, time.monotonic() + RECOVERY_BOUND_S):
            raise RuntimeError(f"the load got no answers:\n{echo.tail(traffic.log)}")
        kills, died = [], ""
        try:
            kills = soak(run_dir, traffic, plan)
        except SystemDied as exc:
            died = str(exc)
        totals = traffic.stop()
        outside = attribute_losses(kills, totals.pop("lost_at"))
        return {"kills": kills, "load": totals, "lost_outside_kills": outside, "died": died,
                "noise": traffic.noise[-20:]}


def attribute_losses(kills: Sequence[Kill], lost_at: Sequence[Sequence[float]]) -> int:
    """Charge each unanswered request to the kill it was sent around (from LOST_WINDOW_S before
    the kill until LOST_WINDOW_S after its path answered again); return those sent around none."""
    windows = sorted((k.at - LOST_WINDOW_S, (k.answering_at or k.at + RECOVERY_BOUND_S) + LOST_WINDOW_S, k)
                     for k in kills)
    starts = [w[0] for w in windows]
    outside = 0
    for times in lost_at:
        for t in times:
            i = bisect.bisect_right(starts, t) - 1
            if i >= 0 and t <= windows[i][1]:
                windows[i][2].lost += 1
            else:
                outside += 1
    return outside


def refusals(log: Path) -> list[dict[str, str | None]]:
    """Every ``refused:`` line of the PDs in the monitor's log (a PD logs the first of each of its
    counters, per incarnation), each with the PD whose fault the monitor logged last before it."""
    after: str | None = None
    found: list[dict[str, str | None]] = []
    for line in log.read_text(errors="replace").splitlines():
        if fault := FAULT_LINE.match(line):
            after = fault[1]
        elif refused := REFUSED_LINE.match(line):
            found.append({"after_kill_of": after, "pd": refused[1], "message": refused[2]})
    return found


# ---- reporting -----------------------------------------------------------------------------------
def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def by_type(kills: Sequence[Kill], final: dict[str, dict]) -> dict[str, dict]:
    """Per component type: kills, survived, restarts the monitor counted, outages, leaks."""
    summary = {}
    present = {kind_of(name) for name in final} | {k.kind for k in kills}
    for kind in (t for t in TYPES if t in present):
        mine = [k for k in kills if k.kind == kind]
        outages = [k.outage_s for k in mine if k.outage_s is not None]
        summary[kind] = {"kills": len(mine), "survived": sum(k.survived for k in mine),
                         "restarts": sum(st["restarts"] for st in final.values() if kind_of(st["name"]) == kind),
                         "worst_outage_s": max(outages, default=None),
                         "median_outage_s": statistics.median(outages) if outages else None,
                         "lost": sum(k.lost for k in mine),
                         "leaked": sum(sum(k.leaked.values()) for k in mine)}
    return summary


def report(result: dict, plan: Plan) -> dict[str, float]:
    """Print the tables; return the ratios."""
    kills, pools = result["kills"], result["pools"]
    worst = max((k.outage_s for k in kills if k.outage_s is not None), default=0.0)
    types_table(by_type(kills, result["status"]), plan)
    totals_table(result, plan, worst)
    print_table(f"Buffer pools after the soak (load stopped, audit settled {AUDIT_SETTLE_S:g} s)",
                ["pool", "buffers", "missing", "doubled", "foreign", "leaked"],
                [[name, *(str(p[k]) for k in ("buffers", "missing", "doubled", "foreign", "leaked"))]
                 for name, p in pools.items()])
    refusals_table(result["refusals"])
    if result["queues"] and (leaked(pools) or not all(k.survived for k in kills)):
        print_table("Queues holding entries after the soak",
                    ["queue", "entries"], [[q, str(n)] for q, n in result["queues"].items()])
    for line in result["noise"]:
        console.print(f"  [yellow]load: {line}[/yellow]")
    if pools and leaked(pools) and not plan.audit_each:
        console.print("  buffers leaked: run with --audit-each to pin them on the kills that leaked them")
    return {"buffers_leaked": float(leaked(pools)) if pools else float("nan"),
            "survived_fraction": sum(k.survived for k in kills) / len(kills) if kills else float("nan"),
            "worst_outage_s": worst}


def types_table(types: dict[str, dict], plan: Plan) -> None:
    columns = ["component", "kills", "survived", "restarts (monitor)", "worst outage s", "median outage s",
               "requests lost around its kills"]
    print_table(f"Random SIGKILLs under UDP echo load (survived: serving again within {RECOVERY_BOUND_S:g} s)",
                columns + (["buffers leaked by its kills"] if plan.audit_each else []),
                [[kind, str(t["kills"]), str(t["survived"]), str(t["restarts"]), seconds(t["worst_outage_s"]),
                  seconds(t["median_outage_s"]), str(t["lost"])] + ([str(t["leaked"])] if plan.audit_each else [])
                 for kind, t in types.items()])


def totals_table(result: dict, plan: Plan, worst: float) -> None:
    kills, totals, pools = result["kills"], result["load"], result["pools"]
    offered = [s + u for s, u in zip(totals["sent"], totals["unsent"])]
    lost = [o - r for o, r in zip(offered, totals["received"])]
    errnos = collections.Counter()
    for flow in totals["errnos"]:
        errnos.update(flow)
    rows = [["kills (survived)", f"{len(kills)} ({sum(k.survived for k in kills)})"],
            ["restarts (monitor's status)", str(sum(st["restarts"] for st in result["status"].values()))],
            ["UDP requests offered", str(sum(offered))],
            ["not sent (host errors)", f"{sum(totals['unsent'])} {dict(errnos) if errnos else ''}"],
            ["answered", f"{sum(totals['received'])} ({sum(totals['duplicates'])} duplicates)"],
            ["lost (not answered)", f"{sum(lost)} ({sum(lost) / sum(offered):.3%})" if sum(offered) else "-"],
            ["lost per client", " ".join(map(str, lost))],
            ["lost away from any kill", str(result["lost_outside_kills"])],
            ["worst outage", f"{worst:.3f} s"],
            ["buffers leaked", str(leaked(pools)) if pools else "not audited"],
            ["system still running", "yes" if result["running"] else f"NO: {result['died']}"]]
    print_table(f"Soak totals ({plan.duration_s:g} s, {plan.rate:g} requests/s per client, seed {plan.seed})",
                ["", "value"], rows)


def refusals_table(found: Sequence[dict]) -> None:
    """What the PDs refused (from their log lines), by the kind of kill it followed."""
    counts = collections.Counter((kind_of(r["after_kill_of"] or "-"), r["pd"], r["message"][:REFUSAL_SHOWN])
                                 for r in found)
    if counts:
        print_table("Refusals the PDs logged (the first of each counter per incarnation)",
                    ["after a kill of", "PD", "message", "times"],
                    [[after, pd, message, str(n)] for (after, pd, message), n in counts.most_common()])


TARGETS = [
    Target("buffers_leaked", None, "buffers missing or doubled after the soak (every pool)", maximum=0.0),
    Target("survived_fraction", 1.0, f"kills after which the path answered again within {RECOVERY_BOUND_S:g} s"),
    Target("worst_outage_s", None, "longest gap between two echoes after a kill (s)"),
]


def plot(kills: Sequence[Kill], path: Path, title: str) -> None:
    """The outage of each kill over the soak's time, colored by component type (x: not survived)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for kind in KILLABLE:
        for survived, marker in ((True, "o"), (False, "x")):
            mine = [k for k in kills if k.kind == kind and k.survived == survived and k.outage_s is not None]
            if mine:
                ax.scatter([k.at_s for k in mine], [k.outage_s for k in mine], marker=marker,
                           label=kind + ("" if survived else " (not survived)"),
                           color=f"C{KILLABLE.index(kind)}")
    ax.set(title=title, xlabel="time into the soak (s)", ylabel="outage (s, longest gap between echoes)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if kills:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    console.print(f"wrote {path}")


# ---- main ----------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, metavar="S",
                        help=f"seconds of soak (default {DURATION_S:g}; --quick: {QUICK_DURATION_S:g})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"of the kills' choice and timing (default {SEED})")
    parser.add_argument("--rate", type=float, default=RATE_PPS,
                        help=f"UDP echo requests/s to each client (default {RATE_PPS})")
    parser.add_argument("--direct", action="store_true", help="both clients direct (default: behind copiers)")
    parser.add_argument("--audit-each", action="store_true",
                        help="after each kill pause the load and audit the buffers (pins leaks on kills)")
    parser.add_argument("--kill", default=",".join(KILLABLE), metavar="TYPES",
                        help=f"component types to kill, comma-separated (default: {','.join(KILLABLE)})")
    hidden = argparse.SUPPRESS
    parser.add_argument("--worker", action="store_true", help=hidden)
    parser.add_argument("--dst", help=hidden)
    parser.add_argument("--max-s", type=float, help=hidden)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.worker:
        return worker(args.dst.split(","), args.rate, args.max_s)
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        console.print("soak.py needs root and /dev/net/tun (network namespaces, TAP devices)")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleans up as Ctrl-C does
    kinds = tuple(k.strip() for k in args.kill.split(",") if k.strip())
    if not kinds or set(kinds) - set(KILLABLE):
        console.print(f"--kill: choose among {', '.join(KILLABLE)}")
        return 2
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    plan = Plan(duration, QUICK_KILL_EVERY_S if args.quick else KILL_EVERY_S, args.rate, args.seed,
                not args.direct, args.audit_each, kinds)
    started = time.monotonic()
    out = _common.out_dir(args.out)
    with tempfile.TemporaryDirectory(prefix="sddf-soak-") as tmp:
        result = run_soak(plan, Path(tmp), out / "soak_monitor.log")
    ratios = report(result, plan)
    console.print("[bold]targets:[/bold]")
    verdicts = _common.check_targets(ratios, TARGETS)
    kills = result["kills"]
    plot(kills, out / "soak.png",
         f"Outage per SIGKILL ({plan.duration_s:g} s soak, {'copiers' if plan.copiers else 'direct'}, "
         f"seed {plan.seed})")
    console.print(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        figures = {"plan": asdict(plan), "kills": [asdict(k) for k in kills],
                   "by_type": by_type(kills, result["status"]), "load": result["load"], "pools": result["pools"],
                   "restarts": {name: st["restarts"] for name, st in result["status"].items()},
                   "refusals": result["refusals"], "queues_at_end": result["queues"],
                   "running": result["running"], "died": result["died"],
                   "lost_outside_kills": result["lost_outside_kills"]}
        _common.write_json(args.json, _common.jsonable(ratios), _common.jsonable(figures), targets=verdicts)
    return 0 if result["running"] and ratios["buffers_leaked"] == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("interrupted (the system, the load and the namespace are gone)")
        sys.exit(130)
