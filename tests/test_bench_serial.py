"""bench/serial.py's measurements run end to end: a flood and typed keys through the real serial path
(without its plot: matplotlib is a bench extra, not a test one)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = f"""
import json, sys
sys.path[:0] = [{str(REPO / "bench")!r}, {str(REPO)!r}]
import serial as bench  # bench/serial.py
print(json.dumps({{"throughput": bench.throughput(1 << 20, 1), "latency": bench.latency(40)}}))
"""


def test_the_serial_benchmark_measures_both_paths() -> None:
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for side in ("pysddf", "direct"):
        assert figures["throughput"][side]["bytes"] >= 1 << 20
        assert figures["throughput"][side]["bytes_per_s"] > 0
        assert figures["latency"][side]["count"] == 40 and 0 < figures["latency"][side]["p50_us"] < 1e6
