"""Signalling benchmark: notify and PPC round trips between PDs against a raw eventfd ping-pong.

Measures, in one run and in two CPU-idle modes (``plain``: the machine as it is; ``pmqos``:
/dev/cpu_dma_latency held at 0, root only):

* notify RTT: PD A notifies PD B, B's ``notified`` notifies back (a real system run by the
  Monitor; components in bench/components.py),
* PPC RTT: A ppcalls B (higher priority),
* baseline: two plain Python processes bounce over two eventfds with blocking reads,
* diagnostic: the same waiting in an edge-triggered epoll, as a PD's loop must (it waits on
  several channels, irqs and PPC sockets at once): what of a PD's round trip is epoll's,

then the CPU an idle 10-PD system uses. The two sides of every round trip are pinned to
different cores by default (``--cpus``): a wake-up across cores is what costs, and leaving
placement to the scheduler makes medians flip between ~7 and ~40 µs from run to run.
Chunks of the three round trips are interleaved so background load hits all of them alike.

    python bench/signal.py [--quick] [--json FILE] [--out DIR] [--cpus A,B|none]
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib, this file is named signal.py)

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import psutil

from _common import arg_parser, console, out_dir, pm_qos, print_table, write_json

REPO = _common.BENCH_DIR.parent
sys.path.append(str(REPO))
from bench.components import RESULT_PREFIX  # noqa: E402  (needs the repository root on sys.path)

KINDS = ("eventfd", "eventfd-epoll", "notify", "ppc")
PMQOS_DEVICE = "/dev/cpu_dma_latency"
IDLE_PAIRS = 5           # 10 PDs
IDLE_TARGET_PERCENT = 1.0
REPORT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    rounds: int          # timed round trips per kind and mode, over all chunks
    chunks: int          # interleaved chunks per kind and mode
    warmup: int          # untimed round trips at the start of each chunk
    idle_window_s: float
    settle_s: float = 1.0


FULL = Plan(rounds=10_000, chunks=4, warmup=300, idle_window_s=10.0)
QUICK = Plan(rounds=3_000, chunks=2, warmup=200, idle_window_s=3.0)


@dataclass(frozen=True)
class MaxTarget:
    """A ratio that must stay at or below ``maximum`` (lower is better)."""

    ratio: str
    maximum: float | None  # None: reported, no target
    meaning: str


TARGETS = (MaxTarget("notify_rtt_vs_eventfd_epoll", None, "median notify RTT / median eventfd RTT via epoll"),
           MaxTarget("notify_rtt_vs_eventfd", 1.5, "median notify RTT / median eventfd RTT"),
           MaxTarget("ppc_rtt_vs_eventfd", 2.0, "median PPC RTT / median eventfd RTT"))


# ---- running the processes --------------------------------------------------------------
def child_env(run_dir: str) -> dict[str, str]:
    """The environment of a measured process: PDs import ``bench.components`` from the repository."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, SDDF_RUN_DIR=run_dir)


@contextlib.contextmanager
def running(kind: str, rounds: int, warmup: int, cpus: str, run_dir: str,
            pairs: int = 1) -> Iterator[tuple[psutil.Process, list[list[int]]]]:
    """Run ``python -m bench.components KIND`` and yield (its process, each pinger's samples) once all reported.

    A notify/ppc system keeps running (idle) inside the block; it is stopped with SIGTERM after.
    """
    argv = [sys.executable, "-m", "bench.components", kind, "--rounds", str(rounds),
            "--warmup", str(warmup), "--pairs", str(pairs), "--cpus", cpus]
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env(run_dir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=errors, bufsize=0)
        try:
            try:
                results = read_results(proc, pairs, REPORT_TIMEOUT_S)
            except RuntimeError as exc:
                errors.seek(0)
                raise RuntimeError(f"{' '.join(argv[1:])}: {exc}\n{errors.read()[-4000:]}") from None
            yield psutil.Process(proc.pid), results
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def read_results(proc: subprocess.Popen, count: int, timeout: float) -> list[list[int]]:
    """Block on ``proc``'s stdout until ``count`` result lines came (other lines are ignored)."""
    assert proc.stdout is not None
    fd, pending, results = proc.stdout.fileno(), b"", []
    deadline = time.monotonic() + timeout
    while len(results) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"no result after {timeout:.0f} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise RuntimeError(f"exited (status {proc.wait()}) before reporting")
        *lines, pending = (pending + chunk).split(b"\n")
        results += [json.loads(line[len(RESULT_PREFIX):])["rtt_ns"]
                    for line in lines if line.startswith(RESULT_PREFIX.encode())]
    return results


def round_trips(plan: Plan, cpus: str, run_dir: str) -> dict[str, list[int]]:
    """Each kind's round-trip samples (ns), measured in interleaved chunks."""
    samples: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for _ in range(plan.chunks):
        for kind in KINDS:
            with running(kind, plan.rounds // plan.chunks, plan.warmup, cpus, run_dir) as (_, results):
                samples[kind] += results[0]
    return samples


def idle_cpu_percent(plan: Plan, run_dir: str) -> tuple[float, int]:
    """% of one core an idle 10-PD system (monitor included) uses; also how many processes were counted.

    Each pair bounces a few notifications first, so every PD has run and gone back to sleep.
    """
    with running("notify", 10, 0, "none", run_dir, pairs=IDLE_PAIRS) as (monitor, _):
        time.sleep(plan.settle_s)
        procs = [monitor, *monitor.children(recursive=True)]
        before = cpu_seconds(procs)
        start = time.monotonic()
        time.sleep(plan.idle_window_s)
        used = cpu_seconds(procs) - before
        elapsed = time.monotonic() - start
    return 100.0 * used / elapsed, len(procs)


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    """User + system CPU time of ``procs`` (resolution: one clock tick, 10 ms, per process)."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


# ---- statistics and output --------------------------------------------------------------
def percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of sorted samples, in µs."""
    return sorted_ns[min(len(sorted_ns) - 1, int(q / 100 * len(sorted_ns)))] / 1000


def summarise(samples: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """mode → kind → (median µs, p99 µs)."""
    return {mode: {kind: (percentile(s, 50), percentile(s, 99)) for kind, s in
                   ((k, sorted(v)) for k, v in by_kind.items())}
            for mode, by_kind in samples.items()}


def ratios_of(stats: dict[str, dict[str, tuple[float, float]]]) -> dict[str, float]:
    """The target ratios per mode (``plain`` unsuffixed, others suffixed with ``_<mode>``)."""
    out = {}
    for mode, by_kind in stats.items():
        suffix = "" if mode == "plain" else f"_{mode}"
        for kind in ("notify", "ppc"):
            out[f"{kind}_rtt_vs_eventfd{suffix}"] = by_kind[kind][0] / by_kind["eventfd"][0]
        out[f"notify_rtt_vs_eventfd_epoll{suffix}"] = by_kind["notify"][0] / by_kind["eventfd-epoll"][0]
    return out


def check_max_targets(ratios: dict[str, float]) -> dict[str, bool]:
    """Print each ratio (every mode) next to its target and whether it is met."""
    met = {}
    for name, value in ratios.items():
        target = next(t for t in TARGETS if name.startswith(t.ratio))
        if target.maximum is None:
            console.print(f"  {name:<34} {value:7.2f}×   (reported, no target)  {target.meaning}")
            continue
        met[name] = value <= target.maximum
        verdict = "[green]met[/green]" if met[name] else "[red]MISSED[/red]"
        console.print(f"  {name:<34} {value:7.2f}×   target ≤ {target.maximum:g}× {verdict}  {target.meaning}")
    return met


def save_cdfs(path: Path, samples: dict[str, dict[str, list[int]]], cpus: str) -> None:
    """Latency CDFs of the three round trips, one line style per PM-QoS mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(KINDS, ("grey", "black", "tab:blue", "tab:orange")))
    styles = {"plain": "-", "pmqos": "--"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode, by_kind in samples.items():
        for kind, ns in by_kind.items():
            xs = sorted(v / 1000 for v in ns)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, styles[mode], color=colours[kind], label=f"{kind} ({mode})")
    ax.set_xscale("log")
    ax.set(title=f"Round-trip latency CDF (cores {cpus})", xlabel="round trip (µs)",
           ylabel="fraction of round trips ≤ x")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    console.print(f"wrote {path}")


def idle_modes() -> dict[str, contextlib.AbstractContextManager[str]]:
    """The CPU-idle modes to measure in, each a context that holds it and says what it holds."""
    modes: dict[str, contextlib.AbstractContextManager[str]] = {
        "plain": contextlib.nullcontext("cpu_dma_latency not held (the machine's idle states)")}
    if os.access(PMQOS_DEVICE, os.W_OK):
        modes["pmqos"] = pm_qos(0)
    else:
        console.print(f"pmqos: skipped ({PMQOS_DEVICE} is not writable: run as root to measure it)")
    return modes


def print_results(stats: dict[str, dict[str, tuple[float, float]]], samples: dict[str, dict[str, list[int]]],
                  held: dict[str, str], cpus: str) -> None:
    """The round-trip table, each row naming the mode it was measured in."""
    rows = []
    for mode, by_kind in stats.items():
        for kind, (median, p99) in by_kind.items():
            rows.append((f"{kind} ({mode})", f"{median:.1f}", f"{p99:.1f}",
                         f"{median / by_kind['eventfd'][0]:.2f}×", str(len(samples[mode][kind]))))
    print_table(f"Round trips (cores {cpus})",
                ["round trip (mode)", "median µs", "p99 µs", "median / eventfd", "samples"], rows)
    for mode, what in held.items():
        console.print(f"  {mode}: {what}")


def main() -> int:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--cpus", default="0,1", metavar="A,B|none",
                        help="pin the pinging side to core A and the echoing side to core B "
                             "(default 0,1; none: the scheduler places them)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    samples: dict[str, dict[str, list[int]]] = {}
    held: dict[str, str] = {}
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sddf-signal-bench-") as run_dir:
        for mode, hold in idle_modes().items():
            with hold as held[mode]:
                console.print(f"[bold]{mode}[/bold]: {held[mode]}; {plan.rounds} round trips of each kind "
                              f"in {plan.chunks} interleaved chunks, cores {args.cpus}")
                samples[mode] = round_trips(plan, args.cpus, run_dir)
        console.print(f"[bold]idle[/bold]: {IDLE_PAIRS * 2}-PD system, settle {plan.settle_s:g} s, "
                      f"window {plan.idle_window_s:g} s (plain mode)")
        idle_percent, idle_procs = idle_cpu_percent(plan, run_dir)
    load_after = os.getloadavg()[0]

    stats = summarise(samples)
    print_results(stats, samples, held, args.cpus)
    ratios = ratios_of(stats)
    met = check_max_targets(ratios)
    met["idle_cpu_percent"] = idle_percent < IDLE_TARGET_PERCENT
    console.print(f"  {'idle_cpu_percent':<30} {idle_percent:7.3f}%   target < {IDLE_TARGET_PERCENT:g}% "
                  f"{'[green]met[/green]' if met['idle_cpu_percent'] else '[red]MISSED[/red]'}  "
                  f"{idle_procs} processes (monitor + PDs), % of one core")
    console.print(f"total time {time.monotonic() - started:.1f} s; 1-min load average {load_before:.2f} → "
                  f"{load_after:.2f} on {os.cpu_count()} cores (other processes compete with the pinned pairs)")
    save_cdfs(out_dir(args.out) / "signal.png", samples, args.cpus)
    if args.json:
        figures: dict[str, float] = {"idle_cpu_percent": idle_percent}
        for mode, by_kind in stats.items():
            for kind, (median, p99) in by_kind.items():
                figures[f"{kind}_median_us_{mode}"] = median
                figures[f"{kind}_p99_us_{mode}"] = p99
        write_json(args.json, ratios, figures, modes=held, cpus=args.cpus, load=[load_before, load_after],
                   met=met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
