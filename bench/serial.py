"""Serial benchmark: output throughput and keystroke-to-echo latency through sDDF's serial path.

Both sides use a pty this benchmark makes; it reads and types on the master, the system under
test (or the baseline) owns the slave:

* throughput — ``pysddf``: a client (bench.serial_components:Flood) writes N bytes → virt_tx →
  the pty driver → the slave; ``direct``: one plain Python process writes the same N bytes to
  the slave in 64 KiB writes. Bytes/s from the first byte read to the last; the two take turns,
  5 rounds each (1 with ``--quick``), and the median round of each is compared.
* keystroke latency — ``pysddf``: a key typed on the master → driver → virt_rx → the shell (which
  echoes it) → virt_tx → driver → back on the master; ``direct``: a plain Python process echoes
  each byte it reads from the slave. One key in flight; p50/p99 over the round trips.

/dev/cpu_dma_latency is held at 0 for both when root. Ratios (``--json``):
``throughput_vs_direct_pty`` (target ≥ 0.5) and ``keystroke_p50_vs_direct`` (target ≤ 3).

    python bench/serial.py [--quick] [--json FILE] [--out DIR]
"""
from __future__ import annotations

import _common  # noqa: I001  (first: moves bench/ behind the stdlib)

import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from _common import Target, console, print_table, rate

REPO = _common.BENCH_DIR.parent
sys.path.append(str(REPO))
from bench.serial_components import END  # noqa: E402
SYSTEM_FILE = _common.BENCH_DIR / "systems" / "serial_bench.py"
READY_S = 30.0
SHELL_READY = b"pysddf shell"
DIRECT_WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NOCTTY)
total, chunk = int(sys.argv[2]), b"x" * 65536
while total:
    total -= os.write(fd, chunk[:min(len(chunk), total)])
os.write(fd, {end!r})
"""
DIRECT_ECHO = """
import os, sys, tty
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
os.write(fd, b"ready\\n")
while True:
    data = os.read(fd, 64)
    if not data:
        break
    os.write(fd, data.replace(b"\\x7f", b"\\b \\b"))  # what the shell echoes for Backspace
"""
TARGETS = [
    Target("throughput_vs_direct_pty", 0.5, "bytes/s through client → virt_tx → driver → pty ÷ a plain writer"),
    Target("keystroke_p50_vs_direct", None, "keystroke-to-echo p50 through driver → virt_rx → shell → virt_tx "
                                           "÷ a plain pty echo (lower is better)", maximum=3.0),
]


@contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pty: (master fd, slave path); the master raw and non-blocking."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    try:
        yield master, path
    finally:
        os.close(slave)
        os.close(master)


def read_until(master: int, marker: bytes, deadline: float, tail: bytes = b"") -> tuple[int, float | None, bytes]:
    """Read the master until ``marker`` arrives: (bytes read, when the first came, the last bytes read)."""
    got, first = 0, None
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 0.5)[0]:
            continue
        try:
            data = os.read(master, 1 << 16)
        except BlockingIOError:
            continue
        if first is None:
            first = time.monotonic()
        got += len(data)
        tail = (tail + data)[-len(marker) - 64:]
        if marker in tail:
            return got, first, tail
    raise TimeoutError(f"{marker!r} did not come (read {got} bytes)")


@contextmanager
def system(device: str, client: str, total: int = 0) -> Iterator[subprocess.Popen]:
    """``sddf run`` of bench/systems/serial_bench.py, stopped (SIGTERM) afterwards."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
               SERIAL_BENCH_DEVICE=device, SERIAL_BENCH_CLIENT=client, SERIAL_BENCH_BYTES=str(total))
    run_dir = tempfile.mkdtemp(prefix="serial-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "sddf.cli", "run", str(SYSTEM_FILE), "--run-dir", run_dir],
                            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def throughput(total: int, rounds: int) -> dict[str, dict]:
    """Bytes/s of ``total`` bytes into the pty, through pysddf and from a plain writer, taking
    turns ``rounds`` times: the median round of each (this machine's pty speed drifts)."""
    runs: dict[str, list[dict]] = {"pysddf": [], "direct": []}
    for _ in range(rounds):
        runs["pysddf"].append(_through_pysddf(total))
        runs["direct"].append(_direct_writer(total))
    return {name: dict(sorted(r, key=lambda f: f["bytes_per_s"])[len(r) // 2], rounds=len(r),
                       all_bytes_per_s=[f["bytes_per_s"] for f in r])
            for name, r in runs.items()}


def _through_pysddf(total: int) -> dict:
    with pty_pair() as (master, path):
        start = time.monotonic()
        with system(f"serial:tty={path}", "flood", total):
            got, first, _ = read_until(master, END, start + READY_S + total / 1e6)
            end = time.monotonic()
    return _rate(got, first, end)


def _direct_writer(total: int) -> dict:
    with pty_pair() as (master, path):
        writer = subprocess.Popen([sys.executable, "-c", DIRECT_WRITER.format(end=END), path, str(total)])
        got, first, _ = read_until(master, END, time.monotonic() + READY_S + total / 1e6)
        end = time.monotonic()
        writer.wait(10)
    return _rate(got, first, end)


def _rate(got: int, first: float | None, end: float) -> dict:
    if first is None:
        raise RuntimeError("no output came through the pty")
    return {"bytes": got, "seconds": end - first, "bytes_per_s": got / (end - first)}


def keystrokes(master: int, count: int) -> list[float]:
    """Type ``a`` then Backspace ``count`` times, one key in flight: each key's echo latency (s)."""
    latencies = []
    for i in range(count):
        key, echo = (b"a", b"a") if i % 2 == 0 else (b"\x7f", b"\b \b")
        sent = time.perf_counter()
        os.write(master, key)
        read_until(master, echo, time.monotonic() + 5)
        latencies.append(time.perf_counter() - sent)
    return latencies


def latency(count: int) -> dict[str, dict]:
    out = {}
    with pty_pair() as (master, path):
        with system(f"serial:tty={path}", "shell"):
            read_until(master, SHELL_READY, time.monotonic() + READY_S)
            time.sleep(0.3)
            out["pysddf"] = summary(keystrokes(master, count))
    with pty_pair() as (master, path):
        echo = subprocess.Popen([sys.executable, "-c", DIRECT_ECHO, path])
        try:
            read_until(master, b"ready", time.monotonic() + READY_S)
            out["direct"] = summary(keystrokes(master, count))
        finally:
            echo.kill()
            echo.wait()
    return out


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {"count": len(ordered), "p50_us": statistics.median(ordered) * 1e6,
            "p99_us": ordered[int(0.99 * (len(ordered) - 1))] * 1e6, "samples_us": [x * 1e6 for x in ordered]}


def main() -> int:
    parser = _common.arg_parser(__doc__.split("\n", 1)[0])
    args = parser.parse_args()
    out = _common.out_dir(args.out)
    total, rounds, keys = (4 << 20, 1, 400) if args.quick else (64 << 20, 5, 2000)
    with _common.pm_qos(0) as qos:
        console.print(f"PM-QoS: {qos}")
        tput = throughput(total, rounds)
        lat = latency(keys)
    print_table(f"Serial output, {total >> 20} MiB into a pty (median of {rounds})", ["", "throughput", "seconds"],
                [[name, rate(f["bytes_per_s"], " B/s"), f"{f['seconds']:.2f}"] for name, f in tput.items()])
    print_table(f"Keystroke to echo, {keys} keys, one in flight", ["", "p50", "p99"],
                [[name, f"{f['p50_us']:.0f} µs", f"{f['p99_us']:.0f} µs"] for name, f in lat.items()])
    ratios = {"throughput_vs_direct_pty": tput["pysddf"]["bytes_per_s"] / tput["direct"]["bytes_per_s"],
              "keystroke_p50_vs_direct": lat["pysddf"]["p50_us"] / lat["direct"]["p50_us"]}
    met = _common.check_targets(ratios, TARGETS)
    plot(lat, out / "serial.png")
    if args.json:
        figures = {"throughput": tput, "latency": {k: {x: y for x, y in v.items() if x != "samples_us"}
                                                   for k, v in lat.items()}}
        _common.write_json(args.json, ratios, figures, targets=met)
    return 0


def plot(lat: dict[str, dict], path: Path) -> None:
    """The keystroke latency distributions (CDF)."""
    series = {name: (f["samples_us"], [(i + 1) / f["count"] for i in range(f["count"])])
              for name, f in lat.items()}
    _common.save_cdf(path, series, title="Keystroke to echo through a pty", xlabel="µs")


if __name__ == "__main__":
    sys.exit(main())
