"""Helpers shared by the benchmarks: arguments, PM-QoS, C builds, tables, targets, JSON, plots, profiles.

Import this module first in a benchmark script: bench/ holds scripts named like stdlib modules
(queue.py, signal.py), and Python puts a script's directory first on ``sys.path``, so importing
this module moves bench/ behind the standard library before anything imports ``queue``.
"""
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

import argparse  # noqa: E402  (after the sys.path fix above)
import contextlib  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator, Sequence  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

BENCH_DIR = Path(_HERE)
console = Console(width=None if sys.stdout.isatty() else 120)


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--json FILE``, ``--out DIR``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer points (< 60 s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write ratios and raw figures here")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", metavar="DIR",
                        help="directory for plots and build products (default: bench/out)")
    return parser


def out_dir(path: Path) -> Path:
    """``path``, created if needed."""
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def pm_qos(latency_us: int = 0) -> Iterator[str]:
    """Hold a CPU wake-up latency request (``/dev/cpu_dma_latency``) for the block; yield what happened.

    Idle states with long exit latencies make every sleep/wake-up cost tens of µs; holding
    the request keeps cores shallow, as a latency-sensitive deployment would. Needs root.
    """
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        yield f"not held ({exc.strerror})"
        return
    try:
        os.write(fd, struct.pack("<i", latency_us))
        yield f"cpu_dma_latency held at {latency_us} µs"
    finally:
        os.close(fd)


def busy_note(seconds: float = 1.0) -> str:
    """How busy the CPUs are with other work right now (sampled before measuring): it skews every number."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    warn = " [yellow](other work is running: expect noise)[/yellow]" if busy > 0.1 else ""
    return f"CPUs {busy:.0%} busy before the run{warn}"


def two_cpus() -> tuple[int, int] | None:
    """Two CPUs this process may use, to pin a producer and a consumer apart (None if fewer)."""
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def build_c(source: Path, out: Path, *flags: str) -> Path:
    """Compile ``source`` with gcc into ``out/build/`` (only if the binary is older); return the binary."""
    binary = out_dir(out / "build") / source.stem
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-std=gnu11", "-Wall", "-Werror", *flags, "-o", str(binary),
                        str(source)], check=True)
    return binary


def rate(value: float, unit: str = "/s") -> str:
    """``1234567`` → ``1.23 M/s``."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table; the first column is left-aligned, the others right-aligned."""
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@dataclass(frozen=True)
class Target:
    """A ratio a benchmark must reach (``minimum``), stay under (``maximum``: lower is better),
    or just reports (both None)."""

    ratio: str
    minimum: float | None
    meaning: str
    maximum: float | None = None


def check_targets(ratios: dict[str, float], targets: Sequence[Target]) -> dict[str, bool]:
    """Print each ratio next to its target and whether it is met; return ratio name → met.

    A ratio that could not be measured (missing, or NaN) is reported as such and not met."""
    met = {}
    for t in targets:
        value = ratios.get(t.ratio, float("nan"))
        if t.minimum is None and t.maximum is None:
            console.print(f"  {t.ratio:<32} {value:8.3f}×   (reported, no target)  {t.meaning}")
            continue
        bound = f"≥ {t.minimum:g}×" if t.minimum is not None else f"≤ {t.maximum:g}×"
        met[t.ratio] = value == value and (t.minimum is None or value >= t.minimum) and \
            (t.maximum is None or value <= t.maximum)
        verdict = "[green]met[/green]" if met[t.ratio] else \
            "[red]MISSED[/red]" if value == value else "[yellow]NOT MEASURED[/yellow]"
        console.print(f"  {t.ratio:<32} {value:8.3f}×   target {bound} {verdict}  {t.meaning}")
    return met


def write_json(path: Path, ratios: dict[str, float], figures: dict, **extra: object) -> None:
    """Write ``{"ratios": …, "figures": …, **extra}``."""
    path.write_text(json.dumps({"ratios": ratios, "figures": figures, **extra}, indent=2) + "\n")
    console.print(f"wrote {path}")


def save_plot(path: Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = True,
              dotted: Sequence[str] = (), xticks: Sequence[float] | None = None) -> None:
    """Save a line plot of ``series`` (label → (xs, ys)); a single-point series is drawn as a dashed
    level, the series named in ``dotted`` (e.g. diagnostics) with dotted lines. On a log x axis
    the ticks are ``xticks`` (default: every x of every series)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_x = sorted({x for xs, _ in series.values() for x in xs})
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, (xs, ys) in series.items():
        if len(xs) == 1:
            ax.hlines(ys[0], all_x[0], all_x[-1], linestyles="dashed", label=label, colors="grey")
        else:
            ax.plot(xs, ys, marker="o", label=label, linestyle=":" if label in dotted else "-")
    if logx:
        ax.set_xscale("log", base=2)
        ticks = all_x if xticks is None else list(xticks)
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    console.print(f"wrote {path}")


def save_cdf(path: Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
              title: str, xlabel: str) -> None:
    """Save cumulative distributions (label → (values ascending, cumulative fractions)), x on a log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, (xs, ys) in series.items():
        ax.step(xs, ys, where="post", label=label)
    ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel="fraction ≤ x", ylim=(0, 1.01))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    console.print(f"wrote {path}")


def print_profile(stats_file: Path, per: int, title: str, top: int = 14) -> None:
    """The functions with the most own time in a cProfile dump, as µs per unit of work (``per`` units)."""
    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    total = sum(tt for _cc, _nc, tt, _ct, _callers in stats.values())
    rows = []
    for (file, line, func), (_cc, calls, tt, ct, _callers) in sorted(
            stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:
        where = func if file == "~" else f"{func} ({Path(file).name}:{line})"
        rows.append((where, f"{calls / per:.3f}", f"{tt / per * 1e6:.3f}", f"{ct / per * 1e6:.3f}",
                     f"{tt / total:.0%}"))
    print_table(f"{title}: {per} descriptors, {total / per * 1e6:.3f} µs each under the profiler",
                ["function", "calls/desc", "own µs/desc", "cum µs/desc", "own share"], rows)


def jsonable(value: object) -> object:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
