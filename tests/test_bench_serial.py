"""bench/serial.py --quick runs end to end: a flood and typed keys through the real serial path."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_serial_benchmark_measures_both_paths_and_writes_its_ratios(tmp_path: Path) -> None:
    out = tmp_path / "serial.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "serial.py"), "--quick", "--json", str(out),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {"throughput_vs_direct_pty", "keystroke_p50_vs_direct"}
    assert all(math.isfinite(v) and v > 0 for v in report["ratios"].values())
    tput = report["figures"]["throughput"]
    assert tput["pysddf"]["bytes"] >= 4 << 20 and tput["direct"]["bytes"] >= 4 << 20
    assert (tmp_path / "serial.png").exists()
