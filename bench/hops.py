"""Hop benchmark: what one hop between PDs costs in the framework, against bare processes, in one run.

A ring of N stages (N = 2…6) passes one net descriptor around; every hop is a dequeue from the
incoming queue, an enqueue on the outgoing one and, under sDDF's signalling protocol, a wake-up of
the next stage (blocking, never polling). Three implementations of the same ring, taking turns:

* ``framework`` — N PDs (bench/hop_components.py: real Components, ledgers and the monitor,
  ``sddf run bench/systems/hops_chain.py``); ``framework-poll`` the same with every PD's bounded
  poll at 50 µs (``ProtectionDomain.poll_us``, ``sddf run --poll-us``): for a machine with a core
  per PD, which this one (2 vCPUs) is only at N = 2;
* ``bare``      — N plain Python processes (bench/hops_bare.py: the same queue layout and
  atomics, a blocking eventfd read, no framework);
* ``c``         — the same in C (bench/c/hops.c).

Per hop: p50/p99 latency (round trip ÷ N) and CPU (every stage's CPU over the timed trips ÷ hops),
plain and with /dev/cpu_dma_latency held at 0 (PM-QoS). At N = 5 a traced run of the framework and
of bare Python splits a hop into its steps (wake → handler, dequeue, enqueue, notify, handler →
asleep, and the kernel's wake-up of the next stage), and ``perf stat`` (if installed) counts
cycles, instructions and cache misses per hop where the machine has the counters (a VM often has
not), and context switches and migrations. Ratios (``--json``): ``hop_p50_vs_bare`` (≤ 1.5, the
worse of plain and PM-QoS; each also as ``…_plain`` / ``…_pmqos``) and ``hop_cpu_vs_bare`` (≤ 1.5);
the poll's ``hop_p50_poll_vs_bare_nN`` and ``hop_cpu_poll_vs_bare_nN`` are reported.

Stages are pinned round robin to two CPUs by default (``--cpus``), the same for all three: left
to the scheduler, placement alone moves a ring's median by 1.5× from one run to the next. A full
run takes every figure as the median of 5 runs of each ring, taking turns (about 4 minutes; the
ratios of 3 runs still moved by ±0.3 between full runs on a noisy 2-vCPU VM); ``--quick`` runs
each ring once at N = 2 and 5 (about 30 s).

    python bench/hops.py [--quick] [--json FILE] [--out DIR] [--cpus A,B|none]
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib)

import contextlib
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

from _common import Target, console, print_table

REPO = _common.BENCH_DIR.parent
CHAIN_SYSTEM = _common.BENCH_DIR / "systems" / "hops_chain.py"
IMPLS = ("framework", "framework-poll", "bare", "c")
POLL_US = 50  # framework-poll: every PD's bounded poll
MODES = ("plain", "pmqos")
BREAKDOWN_N = 5
START_S = 30.0
PERF_EVENTS = "cycles,instructions,cache-misses,context-switches,cpu-migrations"  # a VM may lack the first three
TARGETS = [
    Target("hop_p50_vs_bare", None, "framework ÷ bare Python per-hop p50 at N = 5, the worse of plain and "
                                    "PM-QoS (lower is better)", maximum=1.5),
    Target("hop_cpu_vs_bare", None, "framework ÷ bare Python CPU per hop at N = 5, one descriptor in flight "
                                    "(lower is better)", maximum=1.5),
]


@dataclass(frozen=True)
class Plan:
    ns: tuple[int, ...]
    rounds: int
    warmup: int
    reps: int = 1  # runs of each ring, taking turns: its figures are the medians over them
    cpus: str = ""  # stage k runs on the k-th of these (round robin); "": where the scheduler puts it


@dataclass
class Run:
    """One ring run: per-hop latencies (ns), CPU per hop (ns), perf counts per hop, traces."""

    impl: str
    mode: str
    n: int
    hop_ns: list[float]
    cpu_per_hop_ns: float
    perf: dict[str, float]
    traces: dict[str, list[list[int]]]

    def p(self, q: float) -> float:
        ordered = sorted(self.hop_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Point:
    """One ring's figures (ns per hop): the medians over its runs."""

    impl: str
    mode: str
    n: int
    p50: float
    p99: float
    cpu: float

    @classmethod
    def of(cls, runs: list[Run]) -> "Point":
        first = runs[0]
        return cls(first.impl, first.mode, first.n, statistics.median(r.p(0.5) for r in runs),
                   statistics.median(r.p(0.99) for r in runs), statistics.median(r.cpu_per_hop_ns for r in runs))


# ---- launching one ring ------------------------------------------------------------------------
def command(impl: str, n: int, plan: Plan, out: Path, run_dir: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
               HOPS_CPUS=plan.cpus)
    if impl.startswith("framework"):
        env.update(HOPS_N=str(n), HOPS_ROUNDS=str(plan.rounds), HOPS_WARMUP=str(plan.warmup),
                   HOPS_POLL_US=str(POLL_US if impl == "framework-poll" else 0))
        return [sys.executable, "-m", "sddf.cli", "run", str(CHAIN_SYSTEM), "--run-dir", run_dir], env
    if impl == "bare":
        return [sys.executable, str(_common.BENCH_DIR / "hops_bare.py"), str(n), str(plan.rounds),
                str(plan.warmup)], env
    binary = _common.build_c(_common.BENCH_DIR / "c" / "hops.c", out)
    return [str(binary), str(n), str(plan.rounds), str(plan.warmup)], env


def stages_of(proc: psutil.Process, impl: str) -> list[psutil.Process]:
    """The ring's processes: the monitor's PD children (not the monitor), or the program and its children."""
    children = proc.children(recursive=True)
    return children if impl.startswith("framework") else [proc, *children]


def cpu_ns(procs: list[psutil.Process]) -> float:
    """The time ``procs`` have run on a CPU, from the scheduler's nanosecond accounting
    (/proc/PID/task/*/schedstat; psutil's clock ticks are 10 ms, too coarse for a few µs a hop)."""
    total = 0
    for p in procs:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{p.pid}/task"):
                with open(f"/proc/{p.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    return float(total)


@contextlib.contextmanager
def perf_stat(pids: list[int]) -> Iterator[dict[str, float]]:
    """Count PERF_EVENTS on ``pids`` for the block (empty if perf cannot)."""
    counts: dict[str, float] = {}
    perf = shutil.which("perf")
    if perf is None:
        yield counts
        return
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        proc = subprocess.Popen([perf, "stat", "-x", ",", "-o", out.name, "-e", PERF_EVENTS,
                                 "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.1)  # attached before the timed trips begin (they wait 0.3 s)
        try:
            yield counts
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
            for line in out.read().splitlines():
                fields = line.split(",")
                if len(fields) > 2 and fields[2] in PERF_EVENTS.split(",") and fields[0].replace(".", "").isdigit():
                    counts[fields[2]] = float(fields[0])


def run_ring(impl: str, mode: str, n: int, plan: Plan, out: Path, trace: bool = False,
             perf: bool = False) -> Run:
    """Start the ring, account its CPU from READY to RESULT, stop it."""
    run_dir = tempfile.mkdtemp(prefix="hops-")
    argv, env = command(impl, n, plan, out, run_dir)
    if trace:
        argv += ["--trace"] if impl == "bare" else []
        env["HOPS_TRACE"] = "1"
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        lines = _Lines(proc)
        lines.expect("READY", impl)
        stages = stages_of(psutil.Process(proc.pid), impl)
        if len(stages) != n:
            raise RuntimeError(f"{impl} ring of {n}: found {len(stages)} stage processes")
        with perf_stat([p.pid for p in stages]) if perf else contextlib.nullcontext({}) as counts:
            before = cpu_ns(stages)
            result = json.loads(lines.expect("RESULT ", impl))
            used = cpu_ns(stages) - before
            traces = _traces(lines, n, impl) if trace else {}
        hops = plan.rounds * n
        return Run(impl, mode, n, [rtt / n for rtt in result["rtt_ns"]], used / hops,
                   {k: v / hops for k, v in counts.items()}, traces or result.get("trace", {}))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


class _Lines:
    """The lines a ring prints, read by a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._unclaimed: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, prefix: str, impl: str) -> str:
        """The rest of the first line not yet claimed that starts with ``prefix`` (waiting for it)."""
        for i, line in enumerate(self._unclaimed):
            if line.startswith(prefix):
                return self._unclaimed.pop(i)[len(prefix):]
        deadline = time.monotonic() + START_S
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"the {impl} ring never said {prefix.strip()!r}")
            if line.startswith(prefix):
                return line[len(prefix):]
            self._unclaimed.append(line)


def _traces(lines: _Lines, n: int, impl: str) -> dict[str, list[list[int]]]:
    if impl != "framework":
        return {}
    traces = {}
    while len(traces) < n - 1:  # every stage but the origin
        record = json.loads(lines.expect("TRACE ", impl))
        traces[record["stage"].removeprefix("stage")] = record["stamps"]
    return traces


# ---- the breakdown --------------------------------------------------------------------------------
#: the steps of a hop: (label, framework stamps (from, to), bare stamps (from, to)); stamps are
#: indices into a stage's record (framework: bench.hop_components.TRACE_POINTS; bare:
#: woke, dequeued, enqueued, notified, waiting)
STEPS = [
    ("wake → handler", (1, 2), None),
    ("dequeue", (2, 3), (0, 1)),
    ("enqueue", (3, 4), (1, 2)),
    ("notify (fence, flag, write)", (4, 5), (2, 3)),
    ("after notify → asleep", (5, 0), (3, 4)),
]


def breakdown(run: Run) -> dict[str, float]:
    """Median µs of each step over the timed hops of the forwarding stages, and the kernel's
    wake-up (the notify's write returning → the next stage awake)."""
    framework = run.impl == "framework"
    out: dict[str, list[float]] = {label: [] for label, *_ in STEPS}
    out["kernel wake-up of the next stage"] = []
    stages = {int(k): v for k, v in run.traces.items()}
    for k in range(1, run.n - 1):  # stages that forward and whose successor forwards too
        mine, nxt = stages.get(k, []), stages.get(k + 1, [])
        for i, stamps in enumerate(mine):
            for label, fw, bare in STEPS:
                span = fw if framework else bare
                if span is None:
                    continue
                start, end = span
                if end == 0:  # "asleep" is the next record's first stamp
                    if i + 1 < len(mine):
                        out[label].append(mine[i + 1][0] - stamps[start])
                else:
                    out[label].append(stamps[end] - stamps[start])
            if i < len(nxt):
                woke = nxt[i][1] if framework else nxt[i][0]
                out["kernel wake-up of the next stage"].append(woke - stamps[5 if framework else 3])
    return {label: statistics.median(v) / 1e3 if v else 0.0 for label, v in out.items()}


# ---- the run ----------------------------------------------------------------------------------------
def measure(plan: Plan, out: Path) -> list[Point]:
    runs: dict[tuple[str, str, int], list[Run]] = {}
    for rep in range(plan.reps):
        for mode in MODES:
            with (_common.pm_qos(0) if mode == "pmqos" else contextlib.nullcontext("off")) as held:
                console.print(f"run {rep + 1}/{plan.reps}, mode {mode}: PM-QoS {held}")
                for n in plan.ns:
                    for impl in IMPLS:
                        run = run_ring(impl, mode, n, plan, out)
                        runs.setdefault((impl, mode, n), []).append(run)
                        console.print(f"  N={n} {impl:14s} p50/hop {run.p(0.5) / 1e3:6.1f} µs  "
                                      f"CPU/hop {run.cpu_per_hop_ns / 1e3:6.1f} µs")
    return [Point.of(r) for r in runs.values()]


def perf_counts(plan: Plan, out: Path) -> dict[str, dict[str, float]]:
    """perf stat per hop for each ring at N = BREAKDOWN_N (runs of their own: perf adds to every switch)."""
    return {impl: run_ring(impl, "plain", BREAKDOWN_N, plan, out, perf=True).perf for impl in IMPLS}


def traced(plan: Plan, out: Path) -> dict[str, Run]:
    with _common.pm_qos(0):
        return {impl: run_ring(impl, "pmqos", BREAKDOWN_N, plan, out, trace=True) for impl in ("framework", "bare")}


def ratios_of(points: list[Point]) -> dict[str, float]:
    at = {(p.impl, p.mode, p.n): p for p in points}
    ratios = {}
    for mode in MODES:
        fw, bare = at[("framework", mode, BREAKDOWN_N)], at[("bare", mode, BREAKDOWN_N)]
        ratios[f"hop_p50_vs_bare_{mode}"] = fw.p50 / bare.p50
        ratios[f"hop_cpu_vs_bare_{mode}"] = fw.cpu / bare.cpu
        ratios[f"hop_p50_vs_c_{mode}"] = fw.p50 / at[("c", mode, BREAKDOWN_N)].p50
    for n in sorted({p.n for p in points}):  # where each PD has a core (N = 2) and where they share
        fw, poll, bare = at[("framework", "plain", n)], at[("framework-poll", "plain", n)], at[("bare", "plain", n)]
        ratios[f"hop_p50_vs_bare_n{n}"] = fw.p50 / bare.p50
        ratios[f"hop_p50_poll_vs_bare_n{n}"] = poll.p50 / bare.p50
        ratios[f"hop_cpu_poll_vs_bare_n{n}"] = poll.cpu / bare.cpu
    ratios["hop_p50_vs_bare"] = max(ratios[f"hop_p50_vs_bare_{m}"] for m in MODES)
    ratios["hop_cpu_vs_bare"] = ratios["hop_cpu_vs_bare_plain"]
    return ratios


def report(points: list[Point], steps: dict[str, dict[str, float]], perf: dict[str, dict[str, float]],
           reps: int) -> None:
    print_table(f"Per hop, one descriptor in flight (µs, medians of {reps} runs)", ["N", "mode", "impl", "p50", "p99", "CPU"],
                [[str(p.n), p.mode, p.impl, f"{p.p50 / 1e3:.1f}", f"{p.p99 / 1e3:.1f}", f"{p.cpu / 1e3:.1f}"]
                 for p in sorted(points, key=lambda p: (p.n, p.mode, IMPLS.index(p.impl)))])
    labels = list(next(iter(steps.values())))
    print_table(f"Where a hop's time goes, N = {BREAKDOWN_N}, PM-QoS held (median µs)", ["step", *steps],
                [[label, *(f"{steps[impl][label]:.2f}" for impl in steps)] for label in labels])
    events = [e for e in PERF_EVENTS.split(",") if any(e in counts for counts in perf.values())]
    if events:
        print_table(f"perf stat per hop, N = {BREAKDOWN_N}, plain", ["impl", *events],
                    [[impl, *(f"{counts.get(e, 0):,.2f}" for e in events)] for impl, counts in perf.items()])


def plot(points: list[Point], path: Path) -> None:
    series = {}
    for impl in IMPLS:
        for mode in MODES:
            chosen = sorted((p for p in points if p.impl == impl and p.mode == mode), key=lambda p: p.n)
            series[f"{impl} ({mode})"] = ([p.n for p in chosen], [p.p50 / 1e3 for p in chosen])
    _common.save_plot(path, series, title="Per-hop p50 latency in a ring of N processes", xlabel="N (stages)",
                      ylabel="µs per hop", logx=False, logy=True, dotted=[f"{i} (pmqos)" for i in IMPLS])


def main() -> int:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    parser.add_argument("--cpus", default=None, metavar="A,B|none",
                        help="CPUs the stages are pinned to, stage k on the k-th round robin (default: two "
                             "CPUs; none: the scheduler places them, and medians then flip from run to run)")
    args = parser.parse_args()
    out = _common.out_dir(args.out)
    pair = _common.two_cpus()
    cpus = "" if args.cpus == "none" else args.cpus or (",".join(map(str, pair)) if pair else "")
    plan = Plan((2, 5), 1000, 100, 1, cpus) if args.quick else Plan((2, 3, 4, 5, 6), 3000, 300, 5, cpus)
    console.print(f"{_common.busy_note()}; stages pinned to CPUs {cpus or 'none (scheduler)'}")
    points = measure(plan, out)
    one = Plan((BREAKDOWN_N,), plan.rounds, plan.warmup, 1, cpus)
    trace_runs = traced(one, out)
    perf = perf_counts(one, out)
    steps = {impl: breakdown(run) for impl, run in trace_runs.items()}
    report(points, steps, perf, plan.reps)
    ratios = ratios_of(points)
    met = _common.check_targets(ratios, TARGETS)
    plot(points, out / "hops.png")
    if args.json:
        figures = {"points": [{"impl": p.impl, "mode": p.mode, "n": p.n, "p50_us": p.p50 / 1e3,
                               "p99_us": p.p99 / 1e3, "cpu_per_hop_us": p.cpu / 1e3} for p in points],
                   "breakdown_us": steps, "perf_per_hop": perf, "cpus": cpus, "runs_per_point": plan.reps}
        _common.write_json(args.json, ratios, figures, targets=met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
