"""UDP echo benchmark: the pysddf echo system against a kernel-socket Python server, a C TAP
reflector and PyTCP, with the same C load generator (bench/c/loadgen.c) in the same layout.

Every system under test answers UDP echo on port 1235 at 10.0.0.2 (and 10.0.0.3… with more
clients); the generator runs at 10.0.0.1 inside a network namespace this benchmark creates.
The pysddf systems are bench/systems/echo_n.py with two echo clients (as sDDF's echo example
has), traffic to client0 at 10.0.0.2, client1 idle; TAP driver → virt_rx → (copier →) client0 →
virt_tx → driver, in a namespace with its TAP ``sddf0``:

* ``pysddf``           the headline: the echo server answering UDP echo as an APPLICATION over
                       its stack's UDP events (as sDDF's echo server does over lwIP), both clients
                       direct (mapping the rx region), passes capped at 64 descriptors;
* ``pysddf-copier``    the same with both clients behind copiers: sDDF's own example configuration;
* ``pysddf-uncapped``  the same as ``pysddf`` with passes uncapped (batch = queue capacity 512:
                       each stage drains everything before anyone downstream runs);
* ``pysddf-reflector`` the stack reflects UDP echo itself, no application (direct, capped): the
                       like of ``c-tap``, not of the applications below;
* ``kernel-py``        bench/baselines/kernel_udp_echo.py (recvfrom/sendto loop) in a second
                       namespace, joined to the generator's by a veth pair (an application);
* ``c-tap``            bench/c/tap_reflector.c on a TAP: the ceiling for a TAP path (a reflector);
* ``bare-py``          bench/echo_bare.py on a TAP: the floor for the pysddf echo in Python — the same
                       pipeline (TAP driver → virt_rx → client with our netstack as an application →
                       virt_tx → driver) as four bare processes over sDDF queues with sDDF's signalling
                       and blocking waits, no framework (bare chain + TAP + netstack);
* ``pytcp``            PyTCP 2.7.6 (pip-installed on demand into this venv; GPL-3.0, run as a
                       separate program) answering through its socket API on its own TAP (an
                       application).

Measured, for each system in the same run: ping-pong latency (one request outstanding; 64 B and
1472 B; /dev/cpu_dma_latency held at 0 when root), sustained echo throughput at doubling offered
loads until loss > 1% (then bisecting the knee), CPU per echoed packet (every process of the
system under test, from /proc/PID/task/*/schedstat, before/after each point), and CPU per packet
of echo systems with 1, 2 and 4 clients (bench/systems/echo_n.py, application, all direct) at one
load. Ratios compare like with like: the applications (pysddf ÷ kernel-py, ÷ PyTCP), the
reflectors (pysddf-reflector ÷ c-tap), and the pysddf configurations with each other (copiers ÷
direct, application ÷ reflector, capped ÷ uncapped passes); the floor shows what the framework
costs (pysddf ÷ bare-py) and what a bare Python pipeline of the same shape reaches on the machine
(bare-py ÷ kernel-py). ``--profile [PD]`` then samples the
busiest PD (or PD) of ``pysddf`` under load with py-spy.

``--quick`` (< 60 s; ~52 s without PyTCP on 2 cores) measures every system, with 0.5 s load
points from 2.5 k packets/s, one bisection step, 800 round trips per size, 64 B sweeps only and
the scaling runs at 1 and 4 clients: its figures are rough, its ratios indicative.

    python bench/echo.py [--quick] [--json FILE] [--out DIR] [--systems pysddf,kernel-py,…]
                         [--pysddf-system SPEC] [--no-scaling] [--no-pytcp-install] [--profile [PD]]

Needs root (namespaces, TAP devices). All traffic stays inside the namespaces created here,
each run is bounded in packets and time, and everything is removed on exit, even on failure.
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib)

import collections
import contextlib
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import psutil

from _common import Target, console, print_table, rate

from sddf import control
from sddf.tools.netns import NetNamespace

REPO = _common.BENCH_DIR.parent
BASELINES = _common.BENCH_DIR / "baselines"
ECHO_N = _common.BENCH_DIR / "systems" / "echo_n.py"
PORT = 1235
HOST_ADDR = "10.0.0.1/24"
SERVER_IP = "10.0.0.2"
SERVER_MAC = "02:00:00:00:00:02"
TAP = "sddf0"
SIZES = (64, 1472)
LOSS_LIMIT_PCT = 1.0
GENERATOR_SHORTFALL = 0.9   # the generator sent < 90% of the offered load: stop, it is the limit
NOISY_PCT = 10.0          # warn when other processes used more of the machine than this meanwhile
READY_TIMEOUT_S = 40.0
SETTLE_WINDOW_S = 0.05     # before a load point the system must use < 5% of a core over this window…
SETTLE_IDLE_SHARE = 0.05
SETTLE_MAX_S = 10.0        # … waiting at most this long
STOP_TIMEOUT_S = 10.0
PYTCP_REQUIREMENT = "PyTCP==2.7.6"
SYSTEMS = ("pysddf", "pysddf-copier", "pysddf-uncapped", "pysddf-reflector", "kernel-py", "c-tap", "bare-py",
           "pytcp")
LABELS = {"pysddf": "pysddf echo app, direct", "pysddf-copier": "pysddf echo app, copiers",
          "pysddf-uncapped": "pysddf echo app, uncapped", "pysddf-reflector": "pysddf in-stack reflector",
          "kernel-py": "kernel socket (Python)", "c-tap": "C TAP reflector",
          "bare-py": "bare Python pipeline (floor)", "pytcp": "PyTCP"}
PYSDDF_CLIENTS = 2         # as sDDF's echo example; the load goes to client0, client1 idles
UNCAPPED = 512             # a pass as large as the queue capacity: each stage drains everything
# each pysddf system is bench/systems/echo_n.py built with these (echo_n.system()'s arguments)
PYSDDF_VARIANTS = {"pysddf": {"client": "app", "copiers": False},
                   "pysddf-copier": {"client": "app", "copiers": True},
                   "pysddf-uncapped": {"client": "app", "copiers": False, "batch": UNCAPPED},
                   "pysddf-reflector": {"client": "reflector", "copiers": False}}


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    rates: tuple[int, ...]        # offered loads (packets/s), doubling
    refine: int                   # bisection steps between the last good and the first lossy load
    point_s: float                # seconds per load point
    pingpong: int                 # timed round trips per size
    pingpong_max_s: float         # … but no longer than this
    swept_sizes: tuple[int, ...]  # payload sizes swept for throughput
    scaling: tuple[int, ...]      # client counts of the scaling runs
    scaling_load: int             # their offered load (lowered to half the 1-client knee if above it)
    profile_s: float


RATES = (1_250, 2_500, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000)
COMMON_LOAD = 10_000  # CPU per packet is compared across systems at this offered load
FULL = Plan(rates=RATES, refine=3,
            point_s=2.5, pingpong=5_000, pingpong_max_s=4.0, swept_sizes=(64, 1472), scaling=(1, 2, 4),
            scaling_load=20_000, profile_s=8.0)
QUICK = Plan(rates=RATES[1:-1], refine=1, point_s=0.5,
             pingpong=800, pingpong_max_s=1.0, swept_sizes=(64,), scaling=(1, 4), scaling_load=20_000,
             profile_s=4.0)


# ---- CPU accounting ---------------------------------------------------------------------
@dataclass(frozen=True)
class Sched:
    """What the scheduler has done for one process so far (summed over its threads)."""

    cpu_s: float = 0.0      # time on a CPU
    wait_s: float = 0.0     # time runnable but waiting for a CPU
    runs: int = 0           # times it was put on a CPU (wake-ups and preemption returns)

    def __sub__(self, other: "Sched") -> "Sched":
        return Sched(self.cpu_s - other.cpu_s, self.wait_s - other.wait_s, self.runs - other.runs)


def sched(pid: int) -> Sched:
    """``pid``'s /proc/PID/task/*/schedstat (nanoseconds), else psutil's tick-resolution CPU times."""
    cpu = wait = runs = 0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                fields = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue  # a thread that just ended
        cpu, wait, runs, found = cpu + fields[0], wait + fields[1], runs + fields[2], True
    if found:
        return Sched(cpu / 1e9, wait / 1e9, runs)
    try:
        t = psutil.Process(pid).cpu_times()
        return Sched(t.user + t.system)
    except psutil.Error:
        return Sched()


def sched_snapshot(pids: dict[str, int]) -> dict[str, Sched]:
    return {name: sched(pid) for name, pid in pids.items()}


def machine_busy_s() -> float:
    """CPU time the whole machine has spent busy (all CPUs, tick resolution)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


# ---- the systems under test ---------------------------------------------------------------
@dataclass
class Running:
    """A system answering UDP echo, as the measurements see it."""

    key: str
    label: str
    gen_prefix: list[str]              # runs the generator in the namespace that reaches the system
    ips: list[str]
    pids: dict[str, int]               # processes whose CPU counts as the system's
    alive: Callable[[], bool]
    log: Path
    notes: list[str] = field(default_factory=list)
    #: a pysddf system's counters per PD (its wake-ups and those that found no work)
    counters: Callable[[], dict[str, dict[str, int]]] | None = None


class Bench:
    """Builds the C programs once and runs the generator against a running system."""

    def __init__(self, plan: Plan, work: Path, sddf_system: str | None = None) -> None:
        self.plan = plan
        self.work = work
        self.sddf_system = sddf_system
        self.loadgen = _common.build_c(_common.BENCH_DIR / "c" / "loadgen.c", work)
        self.reflector = _common.build_c(_common.BENCH_DIR / "c" / "tap_reflector.c", work)

    # ---- generator --------------------------------------------------------------------
    def generate(self, run: Running, *args: str, timeout: float, ips: Sequence[str] | None = None) -> dict:
        """Run the load generator against ``run`` (all its addresses unless ``ips``); its JSON
        with ``cpu_s``, ``runq_wait_s`` and ``runs`` (per process of the system over the run),
        ``cpu_s_generator`` and
        ``other_load_pct`` (what everything else on the machine used meanwhile, % of all CPUs)."""
        before, machine, wall = sched_snapshot(run.pids), machine_busy_s(), time.monotonic()
        done = subprocess.run(run.gen_prefix + [str(self.loadgen), "--dst", ",".join(ips or run.ips),
                                                "--port", str(PORT), *args],
                              capture_output=True, text=True, timeout=timeout)
        after, machine, wall = sched_snapshot(run.pids), machine_busy_s() - machine, time.monotonic() - wall
        if done.returncode:
            raise RuntimeError(f"loadgen {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        result = json.loads(done.stdout)
        result["cpu_s_generator"] = result.pop("cpu_s")
        delta = {name: after[name] - before[name] for name in run.pids}
        result["cpu_s"] = {name: d.cpu_s for name, d in delta.items()}
        result["runq_wait_s"] = {name: d.wait_s for name, d in delta.items()}
        result["runs"] = {name: d.runs for name, d in delta.items()}
        other = machine - sum(result["cpu_s"].values()) - result["cpu_s_generator"]
        result["other_load_pct"] = max(0.0, other) / (wall * (psutil.cpu_count() or 1)) * 100
        return result

    def wait_ready(self, run: Running) -> None:
        """Probe every address with UDP echo until each answers (ARP settles on the way)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not run.alive():
                raise RuntimeError(f"{run.label} exited while starting:\n{tail(run.log)}")
            got = self.generate(run, "--mode", "pingpong", "--count", str(3 * len(run.ips)),
                                "--timeout-ms", "100", timeout=10)
            if all(got["per_destination"]):
                return
        raise RuntimeError(f"{run.label}: not every address answered within {READY_TIMEOUT_S:g} s:\n{tail(run.log)}")

    # ---- measurements -----------------------------------------------------------------
    def latency(self, run: Running, size: int) -> dict:
        p = self.plan
        return self.generate(run, "--mode", "pingpong", "--size", str(size), "--count", str(p.pingpong),
                             "--warmup", str(max(50, p.pingpong // 20)), "--duration", str(p.pingpong_max_s),
                             "--timeout-ms", "200", timeout=p.pingpong_max_s + 30)

    def settle(self, run: Running) -> None:
        """Wait (bounded) until the system is idle: a backlog left by an overloaded point (PyTCP's
        queues are unbounded) would otherwise be charged to the next point."""
        deadline = time.monotonic() + SETTLE_MAX_S
        before = sched_snapshot(run.pids)
        while time.monotonic() < deadline:
            time.sleep(SETTLE_WINDOW_S)
            after = sched_snapshot(run.pids)
            if sum((after[n] - before[n]).cpu_s for n in after) < SETTLE_WINDOW_S * SETTLE_IDLE_SHARE:
                return
            before = after
        run.notes.append(f"still busy {SETTLE_MAX_S:g} s after a load point")

    def point(self, run: Running, size: int, load: int, ips: Sequence[str] | None = None) -> dict:
        self.settle(run)
        before = run.counters() if run.counters else None
        got = self.generate(run, "--mode", "rate", "--size", str(size), "--rate", str(load),
                            "--duration", str(self.plan.point_s), timeout=self.plan.point_s + 30, ips=ips)
        if before is not None and run.counters is not None:
            got["wakeups"] = wakeups_between(before, run.counters())
        got["system_cpu_s"] = sum(got["cpu_s"].values())
        got["cpu_us_per_packet"] = per_packet(got, "cpu_s")
        got["gen_cpu_us_per_packet"] = got["cpu_s_generator"] / got["received"] * 1e6 if got["received"] else math.nan
        console.print(f"  [dim]{run.key:<16} {size:>4} B offered {rate(load, ' pps'):>12}: "
                      f"sent {rate(got['sent_pps'], ' pps'):>12}, echoed {rate(got['replies_pps'], ' pps'):>12}, "
                      f"loss {got['loss_pct']:6.2f}%, p50 {got['rtt_us']['p50']:8.1f} µs, "
                      f"CPU {got['cpu_us_per_packet']:6.1f} µs/pkt[/dim]")
        return got

    def sweep(self, run: Running, size: int) -> dict:
        """Doubling loads until loss > 1% (or the generator falls short), then bisect the knee."""
        points: list[dict] = []
        good = bad = None
        for load in self.plan.rates:
            got = self.point(run, size, load)
            points.append(got)
            if not ok(got):
                bad = load
                break
            good = load
            if got["sent_pps"] < GENERATOR_SHORTFALL * load:
                run.notes.append(f"{size} B: the generator could not offer more than "
                                 f"{rate(got['sent_pps'], ' pps')}")
                break
        for _ in range(self.plan.refine if good and bad else 0):
            mid = int(math.sqrt(good * bad))
            got = self.point(run, size, mid)
            points.append(got)
            good, bad = (mid, bad) if ok(got) else (good, mid)
        points.sort(key=lambda g: g["offered_pps"])
        return summarise_sweep(points)


def wakeups_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    """Per PD: [wake-ups, wake-ups that found no work] between two counter snapshots."""
    return {pd: [counters.get(key, 0) - before.get(pd, {}).get(key, 0) for key in ("wakeups", "unproductive_wakeups")]
            for pd, counters in after.items()}


def ok(point: dict) -> bool:
    return point["loss_pct"] <= LOSS_LIMIT_PCT


def summarise_sweep(points: list[dict]) -> dict:
    """The knee (highest load with loss ≤ 1%), sustained and peak replies/s, loss below the knee."""
    good = [p for p in points if ok(p)]
    knee = max(good, key=lambda p: p["offered_pps"]) if good else None
    below = [p for p in points if knee is not None and p["offered_pps"] < knee["offered_pps"]]
    return {"points": points,
            "knee_pps": knee["offered_pps"] if knee else 0.0,
            "sustained_pps": max((p["replies_pps"] for p in good), default=0.0),
            "peak_pps": max((p["replies_pps"] for p in points), default=0.0),
            "lost_below_knee": sum(p["lost"] for p in below)}


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None,
            stop: int = signal.SIGTERM) -> Iterator[subprocess.Popen]:
    """A process started for the block, stopped (``stop``, then SIGKILL) and reaped after it."""
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=REPO)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def sddf_system(bench: Bench, key: str, label: str, spec: str, ips: list[str],
                env: dict[str, str] | None = None) -> Iterator[Running]:
    """An echo system run by ``sddf run SPEC`` in its own namespace; its CPU is every PD's + the monitor's."""
    with NetNamespace(f"echo-{key}") as ns, tempfile.TemporaryDirectory(dir=bench.work) as run_dir:
        env = dict(os.environ, SDDF_RUN_DIR=run_dir, **(env or {}))
        log = bench.work / f"{key}.log"
        argv = ns.exec_prefix() + [sys.executable, "-m", "sddf.cli", "run", spec]
        with process(argv, log, env, stop=signal.SIGINT) as monitor:
            run = Running(key, label, ns.exec_prefix(), ips, {"monitor": monitor.pid},
                          lambda: monitor.poll() is None, log,
                          counters=lambda: control_in(run_dir, {"cmd": "counters", "fresh": True})["counters"])
            bench.wait_ready(run)
            reply = control_in(run_dir, {"cmd": "status"})
            run.pids.update({pd["name"]: pd["pid"] for pd in reply["pds"] if pd["pid"]})
            yield run


def control_in(run_dir: str, request: dict) -> dict:
    """A control request to the one system running under ``run_dir``."""
    reply, fds = control.request(run_dir, control.only_running_system(run_dir), request)
    for fd in fds:
        os.close(fd)
    return reply


def pysddf(bench: Bench, key: str = "pysddf") -> contextlib.AbstractContextManager[Running]:
    """One of the pysddf systems (PYSDDF_VARIANTS), load on client0; ``--pysddf-system`` replaces
    the system file of ``pysddf`` (it is handed the same environment)."""
    from systems import echo_n  # bench/systems/echo_n.py

    spec = bench.sddf_system if key == "pysddf" and bench.sddf_system else str(ECHO_N)
    return sddf_system(bench, key, LABELS[key], spec, [SERVER_IP],
                       env=echo_n.env(PYSDDF_CLIENTS, **PYSDDF_VARIANTS[key]))


def echo_n(bench: Bench, n: int) -> contextlib.AbstractContextManager[Running]:
    from systems.echo_n import client_ip, env  # bench/systems/echo_n.py

    return sddf_system(bench, f"echo{n}c", f"pysddf echo, {n} clients", str(ECHO_N),
                       [client_ip(i) for i in range(n)], env=env(n, client="app", copiers=False))


@contextlib.contextmanager
def kernel_py(bench: Bench) -> Iterator[Running]:
    """The Python socket server in one namespace, the generator in another, joined by a veth pair."""
    with NetNamespace("echo-kgen") as gen, NetNamespace("echo-ksrv") as srv:
        subprocess.run(["ip", "link", "add", "veth-gen", "netns", gen.name, "type", "veth",
                        "peer", "name", "veth-srv", "netns", srv.name], check=True)
        for ns, dev, addr in ((gen, "veth-gen", HOST_ADDR), (srv, "veth-srv", f"{SERVER_IP}/24")):
            ns.run(["ip", "addr", "add", addr, "dev", dev])
            ns.run(["ip", "link", "set", dev, "up"])
        log = bench.work / "kernel-py.log"
        argv = srv.exec_prefix() + [sys.executable, str(BASELINES / "kernel_udp_echo.py"), "--bind", SERVER_IP,
                                    "--port", str(PORT)]
        with process(argv, log) as server:
            run = Running("kernel-py", LABELS["kernel-py"], gen.exec_prefix(), [SERVER_IP],
                          {"server": server.pid}, lambda: server.poll() is None, log)
            bench.wait_ready(run)
            yield run


@contextlib.contextmanager
def tap_program(bench: Bench, key: str, argv: list[str]) -> Iterator[Running]:
    """A program that attaches to the TAP ``sddf0`` of its own namespace and answers there; its
    CPU is its own and its child processes'."""
    with NetNamespace(f"echo-{key}") as ns:
        ns.add_tap(TAP, HOST_ADDR)
        log = bench.work / f"{key}.log"
        with process(ns.exec_prefix() + argv, log) as server:
            run = Running(key, LABELS[key], ns.exec_prefix(), [SERVER_IP], {"server": server.pid},
                          lambda: server.poll() is None, log)
            bench.wait_ready(run)
            run.pids.update({f"child{i}": child.pid for i, child in enumerate(psutil.Process(server.pid).children())})
            yield run


def c_tap(bench: Bench) -> contextlib.AbstractContextManager[Running]:
    return tap_program(bench, "c-tap", [str(bench.reflector), "--tap", TAP, "--ip", SERVER_IP,
                                        "--mac", SERVER_MAC, "--port", str(PORT)])


def bare_py(bench: Bench) -> contextlib.AbstractContextManager[Running]:
    return tap_program(bench, "bare-py", [sys.executable, str(_common.BENCH_DIR / "echo_bare.py"), "--tap", TAP,
                                          "--ip", SERVER_IP, "--mac", SERVER_MAC, "--port", str(PORT)])


def pytcp(bench: Bench) -> contextlib.AbstractContextManager[Running]:
    return tap_program(bench, "pytcp", [sys.executable, "-O", str(BASELINES / "pytcp_echo.py"), "--tap", TAP,
                                        "--ip", f"{SERVER_IP}/24", "--mac", SERVER_MAC, "--port", str(PORT)])


def ensure_pytcp(install: bool) -> str | None:
    """None if PyTCP can be imported (installing it with pip into this venv if allowed), else why not."""
    if importlib.util.find_spec("pytcp") is not None:
        return None
    if not install:
        return "PyTCP is not installed (--no-pytcp-install): pip install PyTCP to measure it"
    console.print(f"PyTCP is not installed: pip install {PYTCP_REQUIREMENT} into {sys.prefix} "
                  "(GPL-3.0; it runs as a separate program)")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", PYTCP_REQUIREMENT],
                          capture_output=True, text=True, timeout=300)
    importlib.invalidate_caches()
    if done.returncode or importlib.util.find_spec("pytcp") is None:
        return f"pip install {PYTCP_REQUIREMENT} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


STARTERS: dict[str, Callable[[Bench], contextlib.AbstractContextManager[Running]]] = {
    **{key: lambda bench, key=key: pysddf(bench, key) for key in PYSDDF_VARIANTS},
    "kernel-py": kernel_py, "c-tap": c_tap, "bare-py": bare_py, "pytcp": pytcp}


# ---- running everything ---------------------------------------------------------------------
def measure_system(bench: Bench, key: str) -> dict:
    """Latency (with PM-QoS held) and throughput sweeps of one system."""
    result: dict = {"label": LABELS[key]}
    with STARTERS[key](bench) as run:
        console.print(f"[bold]{run.label}[/bold]: answering on {', '.join(run.ips)}")
        with _common.pm_qos(0) as qos:
            result["latency"] = {str(size): bench.latency(run, size) for size in SIZES}
        result["pm_qos"] = qos
        for size in SIZES:
            lat = result["latency"][str(size)]
            console.print(f"  [dim]{key:<16} {size:>4} B ping-pong: p50 {lat['rtt_us']['p50']:.1f} µs, "
                          f"p99 {lat['rtt_us']['p99']:.1f} µs ({lat['received']}/{lat['sent']})[/dim]")
        result["sweeps"] = {str(size): bench.sweep(run, size) for size in bench.plan.swept_sizes}
        result["notes"] = run.notes
    return result


def measure_scaling(bench: Bench, load: int) -> dict:
    """CPU per packet of the echo system with 1, 2, 4… clients at one offered load, spread round-robin."""
    scaling = {}
    for n in bench.plan.scaling:
        with echo_n(bench, n) as run:
            got = bench.point(run, 64, load)
            got["clients"] = n
            scaling[str(n)] = got
    return scaling


# ---- profiling ------------------------------------------------------------------------------
def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def collapsed_profile(path: Path) -> dict[str, collections.Counter]:
    """py-spy's raw (collapsed) stacks → samples per function (own and inclusive) and per line (own).

    Frames read ``function (file:line)``; a function's samples are summed over its lines."""
    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in ("own", "inclusive", "lines")}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        functions = [re.sub(r":\d+\)$", ")", f) for f in frames]
        counts["lines"][frames[-1]] += n
        counts["own"][functions[-1]] += n
        for function in set(functions):
            counts["inclusive"][function] += n
    return counts


def profile(bench: Bench, load: int, pd: str | None) -> dict:
    """Run the echo system at ``load``; per-PD CPU share, then py-spy on the busiest PD (or ``pd``)."""
    spy = py_spy()
    with pysddf(bench) as run:
        point = bench.point(run, 64, load)
        cpu = point["cpu_s"]
        target = pd or max((n for n in cpu if n != "monitor"), key=cpu.get)
        if target not in run.pids:
            raise SystemExit(f"echo.py: no PD named {target!r} (PDs: {', '.join(sorted(run.pids))})")
        result: dict = {"point": point, "pd": target}
        if spy is None:
            result["note"] = "py-spy is not installed: pip install py-spy (into this venv) to sample functions"
            return result
        raw = bench.work / f"profile-{target}.txt"
        duration = bench.plan.profile_s
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(run.pids[target]), "--duration", str(int(duration)),
                                     "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(raw)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            under = bench.generate(run, "--mode", "rate", "--size", "64", "--rate", str(load),
                                   "--duration", str(duration), timeout=duration + 30)
            _, err = spy_proc.communicate(timeout=30)
        finally:
            if spy_proc.poll() is None:
                spy_proc.kill()
                spy_proc.wait()
        if not raw.exists():
            result["note"] = f"py-spy wrote nothing: {err.strip()[-300:]}"
            return result
        counts = collapsed_profile(raw)
        result.update(samples=sum(counts["own"].values()), loss_pct_under_profiler=under["loss_pct"],
                      **{kind: c.most_common(25) for kind, c in counts.items()})
    return result


# ---- reporting ------------------------------------------------------------------------------
def us(value: float) -> str:
    return "-" if value is None or value != value or value < 0 else f"{value:,.1f}"


def point_at(sweep: dict, load: float) -> dict | None:
    return next((p for p in sweep["points"] if p["offered_pps"] == load), None)


def per_packet(point: dict, what: str) -> float:
    """µs of ``what`` (``cpu_s``, ``runq_wait_s``: summed over the system's processes) per echoed packet."""
    return sum(point[what].values()) / point["received"] * 1e6 if point["received"] else math.nan


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else math.nan


def report(results: dict[str, dict], scaling: dict, plan: Plan, out: Path) -> tuple[dict[str, float], dict]:
    """Print the tables, save the plots; return (ratios, verdicts of the non-ratio targets)."""
    measured = {k: r for k, r in results.items() if "latency" in r}
    qos = next((r["pm_qos"] for r in measured.values()), "n/a")
    print_table(f"UDP echo latency, ping-pong (one outstanding), µs; PM-QoS: {qos}",
                ["system", *(f"{s} B {q}" for s in SIZES for q in ("p50", "p99")),
                 "64 B: CPU µs per round trip", "64 B: run-queue wait µs per round trip"],
                [[r["label"], *(us(r["latency"][str(s)]["rtt_us"][q]) for s in SIZES for q in ("p50", "p99")),
                  *(us(per_packet(r["latency"]["64"], what)) for what in ("cpu_s", "runq_wait_s"))]
                 for r in measured.values()])
    for size in plan.swept_sizes:
        rows = []
        for key, r in measured.items():
            for p in r["sweeps"][str(size)]["points"]:
                rows.append([key, rate(p["offered_pps"]), rate(p["sent_pps"]), rate(p["replies_pps"]),
                             f"{p['loss_pct']:.2f}", us(p["rtt_us"]["p50"]), us(p["rtt_us"]["p99"]),
                             us(p["cpu_us_per_packet"]), us(p["gen_cpu_us_per_packet"]),
                             f"{p['other_load_pct']:.0f}%"])
        print_table(f"UDP echo under offered load, {size} B, {plan.point_s:g} s per point",
                    ["system", "offered", "sent", "echoed", "loss %", "p50 µs", "p99 µs", "CPU µs/pkt",
                     "generator µs/pkt", "other load"], rows)
        print_table(f"Sustained UDP echo throughput, {size} B (highest load with loss ≤ {LOSS_LIMIT_PCT:g}%)",
                    ["system", "knee (offered)", "sustained echoed", "peak echoed", "CPU µs/pkt at knee",
                     "lost below knee"],
                    [[r["label"], rate(s["knee_pps"]), rate(s["sustained_pps"]), rate(s["peak_pps"]),
                      us((point_at(s, s["knee_pps"]) or {}).get("cpu_us_per_packet")), str(s["lost_below_knee"])]
                     for r in measured.values() for s in [r["sweeps"][str(size)]]])
    for key in PYSDDF_VARIANTS:
        sweep = measured.get(key, {}).get("sweeps", {}).get("64")
        knee = point_at(sweep, sweep["knee_pps"]) if sweep else None
        if knee is not None:
            per_pd_table(knee, f"{LABELS[key]} at its knee")
    if scaling:
        print_table("pysddf echo system with N clients (all direct), same offered load, 64 B",
                    ["clients", "offered", "echoed", "loss %", "p50 µs", "CPU µs/pkt", "replies per client"],
                    [[str(n), rate(p["offered_pps"]), rate(p["replies_pps"]), f"{p['loss_pct']:.2f}",
                      us(p["rtt_us"]["p50"]), us(p["cpu_us_per_packet"]),
                      " ".join(str(c) for c in p["per_destination"])] for n, p in scaling.items()])
    others = sorted(p["other_load_pct"] for r in measured.values() for sw in r["sweeps"].values()
                    for p in sw["points"])
    if others and others[len(others) // 2] > NOISY_PCT:
        console.print(f"  [yellow]warning: other processes used {others[len(others) // 2]:.0f}% of the machine "
                      "(median over the load points) while this ran: expect noisy numbers[/yellow]")
    for r in measured.values():
        for note in r["notes"]:
            console.print(f"  note: {r['label']}: {note}")
    for key, r in results.items():
        if "skipped" in r:
            console.print(f"  [yellow]{r['label']}: not measured: {r['skipped']}[/yellow]")

    def sustained(key: str) -> float | None:
        return measured[key]["sweeps"]["64"]["sustained_pps"] if key in measured else None

    def p50(key: str) -> float | None:
        return measured[key]["latency"]["64"]["rtt_us"]["p50"] if key in measured else None

    cpu_at = {k: (point_at(r["sweeps"]["64"], COMMON_LOAD) or {}).get("cpu_us_per_packet")
              for k, r in measured.items()}
    ratios = {
        "udp64_throughput_vs_kernel_py": ratio(sustained("pysddf"), sustained("kernel-py")),
        "udp64_throughput_vs_pytcp": ratio(sustained("pysddf"), sustained("pytcp")),
        "udp64_p50_latency_vs_kernel_py": ratio(p50("pysddf"), p50("kernel-py")),
        "udp64_throughput_vs_c_tap": ratio(sustained("pysddf"), sustained("c-tap")),
        "cpu_per_packet_4c_vs_1c": ratio(scaling.get("4", {}).get("cpu_us_per_packet"),
                                         scaling.get("1", {}).get("cpu_us_per_packet")),
        "udp64_cpu_per_packet_vs_kernel_py": ratio(cpu_at.get("pysddf"), cpu_at.get("kernel-py")),
        "copier_vs_direct_sustained": ratio(sustained("pysddf-copier"), sustained("pysddf")),
        "copier_vs_direct_p50": ratio(p50("pysddf-copier"), p50("pysddf")),
        "app_vs_reflector_sustained": ratio(sustained("pysddf"), sustained("pysddf-reflector")),
        "reflector_vs_c_tap_sustained": ratio(sustained("pysddf-reflector"), sustained("c-tap")),
        "capped_vs_uncapped_sustained": ratio(sustained("pysddf"), sustained("pysddf-uncapped")),
        "capped_vs_uncapped_p50": ratio(p50("pysddf"), p50("pysddf-uncapped")),
        # the floor: what the framework adds to it, and where it stands against the kernel server
        "udp64_p50_latency_vs_floor": ratio(p50("pysddf"), p50("bare-py")),
        "udp64_throughput_vs_floor": ratio(sustained("pysddf"), sustained("bare-py")),
        "udp64_cpu_per_packet_vs_floor": ratio(cpu_at.get("pysddf"), cpu_at.get("bare-py")),
        "floor_p50_latency_vs_kernel_py": ratio(p50("bare-py"), p50("kernel-py")),
        "floor_throughput_vs_kernel_py": ratio(sustained("bare-py"), sustained("kernel-py")),
        "floor_cpu_per_packet_vs_kernel_py": ratio(cpu_at.get("bare-py"), cpu_at.get("kernel-py")),
    }
    variants_table(measured, cpu_at)
    console.print("[bold]targets:[/bold]")
    _common.check_targets(ratios, TARGETS)
    verdicts = {}
    if "pysddf" in measured:
        lost = measured["pysddf"]["sweeps"]["64"]["lost_below_knee"]
        verdicts["no_loss_below_knee"] = lost == 0
        verdict = "[green]met[/green]" if lost == 0 else f"[red]MISSED[/red] ({lost} packets lost)"
        console.print(f"  {'pysddf: no loss below the knee':<32} {verdict}")
    plots(measured, plan, out)
    return ratios, verdicts


def variants_table(measured: dict[str, dict], cpu_at: dict[str, float | None]) -> None:
    """The pysddf configurations side by side, 64 B, each against the headline ``pysddf``."""
    rows = []
    base = measured.get("pysddf")
    for key in PYSDDF_VARIANTS:
        if key not in measured:
            continue
        r, lat = measured[key], measured[key]["latency"]["64"]["rtt_us"]
        sweep = r["sweeps"]["64"]
        at_knee = (point_at(sweep, sweep["knee_pps"]) or {}).get("cpu_us_per_packet")
        vs = (f"{ratio(sweep['sustained_pps'], base['sweeps']['64']['sustained_pps']):.2f}×",
              f"{ratio(lat['p50'], base['latency']['64']['rtt_us']['p50']):.2f}×") if base else ("-", "-")
        rows.append([r["label"], us(lat["p50"]), us(lat["p99"]), rate(sweep["sustained_pps"]), us(at_knee),
                     us(cpu_at.get(key)), *vs])
    if rows:
        print_table("pysddf configurations, 64 B (application vs in-stack reflector, direct vs copiers, "
                    f"passes capped at 64 vs uncapped at {UNCAPPED})",
                    ["system", "p50 µs", "p99 µs", "sustained echoed", "CPU µs/pkt at knee",
                     f"CPU µs/pkt at {rate(COMMON_LOAD, ' pps')}", "sustained ÷ pysddf", "p50 ÷ pysddf"], rows)


def per_pd_table(point: dict, title: str) -> None:
    """Where an echo system's CPU goes at one load point: per PD, per echoed packet."""
    total, n = point["system_cpu_s"], point["received"]
    if not n:
        return
    wakeups = point.get("wakeups", {})
    rows = [[name, f"{cpu / n * 1e6:.2f}", f"{cpu / point['elapsed_s'] * 100:.0f}%",
             f"{cpu / total:.0%}" if total else "-", f"{point['runs'][name] / n:.2f}",
             f"{point['runq_wait_s'][name] / n * 1e6:.2f}",
             f"{wakeups[name][0] / n:.2f}" if name in wakeups else "-",
             f"{wakeups[name][1] / max(wakeups[name][0], 1):.0%}" if name in wakeups else "-"]
            for name, cpu in sorted(point["cpu_s"].items(), key=lambda kv: -kv[1])]
    print_table(f"{title}: CPU per PD ({rate(point['offered_pps'], ' pps')} offered, "
                f"{point['size']} B, loss {point['loss_pct']:.2f}%)",
                ["PD", "CPU µs per echoed packet", "of one core", "share", "runs per packet",
                 "run-queue wait µs per packet", "wake-ups per packet", "found no work"], rows)


TARGETS = [
    Target("udp64_throughput_vs_kernel_py", 0.5, "sustained 64 B echo: pysddf ÷ kernel-socket Python server"),
    Target("udp64_throughput_vs_pytcp", 2.0, "sustained 64 B echo: pysddf ÷ PyTCP"),
    Target("udp64_p50_latency_vs_kernel_py", None, "64 B ping-pong p50: pysddf ÷ kernel-socket Python server",
           maximum=3.0),
    Target("udp64_throughput_vs_c_tap", None, "sustained 64 B echo: pysddf (application) ÷ C TAP reflector "
           "(like with like: reflector_vs_c_tap_sustained)"),
    Target("cpu_per_packet_4c_vs_1c", None, "CPU per packet, 4 clients ÷ 1 client, same load (flat)",
           maximum=1.25),
    Target("udp64_cpu_per_packet_vs_kernel_py", None, f"CPU per echoed packet at {COMMON_LOAD} pps: "
           "pysddf (all PDs) ÷ kernel-socket server process"),
    Target("copier_vs_direct_sustained", None, "sustained 64 B echo: pysddf-copier (sDDF's example: both "
           "clients behind copiers) ÷ pysddf (direct)"),
    Target("copier_vs_direct_p50", None, "64 B ping-pong p50: pysddf-copier ÷ pysddf"),
    Target("app_vs_reflector_sustained", None, "sustained 64 B echo: pysddf (application) ÷ pysddf-reflector "
           "(in-stack)"),
    Target("reflector_vs_c_tap_sustained", None, "sustained 64 B echo: pysddf-reflector ÷ C TAP reflector"),
    Target("capped_vs_uncapped_sustained", None, f"sustained 64 B echo: pysddf (passes ≤ 64) ÷ pysddf-uncapped "
           f"(≤ {UNCAPPED})"),
    Target("capped_vs_uncapped_p50", None, "64 B ping-pong p50: pysddf ÷ pysddf-uncapped"),
    Target("udp64_p50_latency_vs_floor", None, "64 B ping-pong p50: pysddf ÷ bare-py (the floor: what the "
           "framework adds)"),
    Target("udp64_throughput_vs_floor", None, "sustained 64 B echo: pysddf ÷ bare-py"),
    Target("udp64_cpu_per_packet_vs_floor", None, f"CPU per echoed packet at {COMMON_LOAD} pps: pysddf ÷ bare-py"),
    Target("floor_p50_latency_vs_kernel_py", None, "64 B ping-pong p50: bare-py ÷ kernel-py (above 3: even the "
           "bare pipeline misses the latency target here)"),
    Target("floor_throughput_vs_kernel_py", None, "sustained 64 B echo: bare-py ÷ kernel-py"),
    Target("floor_cpu_per_packet_vs_kernel_py", None, f"CPU per echoed packet at {COMMON_LOAD} pps: bare-py ÷ "
           "kernel-py"),
]


def plots(measured: dict[str, dict], plan: Plan, out: Path) -> None:
    if not measured:
        return
    for size in plan.swept_sizes:
        sweeps = {r["label"]: r["sweeps"][str(size)]["points"] for r in measured.values()}
        offered = {label: [p["offered_pps"] / 1000 for p in pts] for label, pts in sweeps.items()}
        every = sorted({x for xs in offered.values() for x in xs})
        ticks = [r / 1000 for r in plan.rates if every[0] <= r / 1000 <= every[-1]]
        _common.save_plot(out / f"echo_throughput_{size}.png",
                          {"offered": (every, every),
                           **{label: (offered[label], [p["replies_pps"] / 1000 for p in pts])
                              for label, pts in sweeps.items()}},
                          title=f"UDP echo throughput, {size} B (each system until loss > {LOSS_LIMIT_PCT:g}%)",
                          xlabel="offered load (k packets/s)", ylabel="echoed (k packets/s)",
                          dotted=["offered"], xticks=ticks)
        _common.save_plot(out / f"echo_cpu_per_packet_{size}.png",
                          {label: (offered[label], [p["cpu_us_per_packet"] for p in pts])
                           for label, pts in sweeps.items()},
                          title=f"CPU per echoed packet (all processes of the system), {size} B",
                          xlabel="offered load (k packets/s)", ylabel="CPU µs per echoed packet", xticks=ticks)
    for size in SIZES:
        _common.save_cdf(out / f"echo_latency_cdf_{size}.png",
                         {r["label"]: tuple(zip(*r["latency"][str(size)]["cdf"])) for r in measured.values()
                          if r["latency"][str(size)]["cdf"]},
                         title=f"UDP echo round trip, ping-pong, {size} B", xlabel="round-trip time (µs)")


def print_profile(prof: dict) -> None:
    per_pd_table(prof["point"], "pysddf echo, profile run")
    if "note" in prof:
        console.print(f"  profile: {prof['note']}")
        return
    samples = prof["samples"] or 1
    console.print("  py-spy counts a thread as busy while it is runnable, not only while it runs: a PD preempted "
                  "by the higher-priority PD it just notified shows that wait inside Notifier.notify, and a PD "
                  "woken but not yet on a CPU shows it inside Waiter.wait. The CPU column above is schedstat's.")
    for kind in ("own", "inclusive", "lines"):
        print_table(f"py-spy, PD {prof['pd']}: {kind} samples ({prof['samples']} samples, "
                    f"loss under the profiler {prof['loss_pct_under_profiler']:.2f}%)",
                    ["function (file:line)", "share"],
                    [[fn, f"{n / samples:.1%}"] for fn, n in prof[kind][:15]])


def main() -> int:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--pysddf-system", metavar="SPEC",
                        help="the system measured as 'pysddf' (a bundled name or a system file whose "
                             "client at 10.0.0.2 answers UDP echo on 1235; it gets echo_n's environment, "
                             "ECHO_CLIENTS=2 ECHO_CLIENT=app ECHO_COPIERS=0; default: bench/systems/echo_n.py)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1/2/4-client runs")
    parser.add_argument("--no-pytcp-install", action="store_true",
                        help="do not pip-install PyTCP when it is missing (skip it instead)")
    parser.add_argument("--profile", nargs="?", const="", metavar="PD",
                        help="afterwards, py-spy the busiest PD (or PD) of the echo system under load")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        console.print("echo.py needs root, /dev/net/tun and iproute2 (network namespaces, TAP devices)")
        return 2
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = set(keys) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    plan = QUICK if args.quick else FULL
    out = _common.out_dir(args.out)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sddf-echo-bench-") as tmp:
        bench = Bench(plan, Path(tmp), args.pysddf_system)
        results: dict[str, dict] = {}
        for key in keys:
            why_not = ensure_pytcp(not args.no_pytcp_install) if key == "pytcp" else None
            if why_not:
                results[key] = {"label": LABELS[key], "skipped": why_not}
                continue
            results[key] = measure_system(bench, key)
        scaling: dict = {}
        if not args.no_scaling:
            knee = results.get("pysddf", {}).get("sweeps", {}).get("64", {}).get("knee_pps") or plan.scaling_load
            scaling = measure_scaling(bench, int(min(plan.scaling_load, knee / 2)))
        ratios, verdicts = report(results, scaling, plan, out)
        prof = None
        if args.profile is not None:
            knee = results.get("pysddf", {}).get("sweeps", {}).get("64", {}).get("knee_pps") or plan.scaling_load
            prof = profile(bench, int(knee), args.profile or None)
            print_profile(prof)
    console.print(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        _common.write_json(args.json, _common.jsonable(ratios),
                           _common.jsonable({"systems": results, "scaling": scaling}),
                           targets=verdicts, plan=vars(plan) | {"quick": args.quick}, profile=_common.jsonable(prof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
