"""``sddf demo``: the echo system in its own network namespace, pinged and echoed, then stopped."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from sddf.tools.netns import NetNamespace, can_make_named, unshare_prefix

CLIENT_IPS = ("10.0.0.2", "10.0.0.3")
READY_TIMEOUT_S = 20


def _wait_ready(prefix: list[str], monitor: subprocess.Popen) -> None:
    code = ("import sys; from sddf.tools.probe import icmp_ping\n"
            f"try: sys.exit(0 if all(icmp_ping(ip, 1, 0.5)[0] for ip in {CLIENT_IPS!r}) else 1)\n"
            "except OSError: sys.exit(1)")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if monitor.poll() is not None:
            raise RuntimeError(f"the echo system stopped (exit code {monitor.returncode}); see its output above")
        if subprocess.run(prefix + [sys.executable, "-c", code]).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the echo clients did not answer pings within {READY_TIMEOUT_S} s")


def run_inside(prefix: list[str]) -> int:
    """Start the echo system, probe both clients, print the summary, stop. ``prefix`` enters the ns."""
    console = Console(stderr=True)
    monitor = subprocess.Popen(prefix + [sys.executable, "-m", "sddf.cli", "run", "echo"])
    try:
        _wait_ready(prefix, monitor)
        out = subprocess.run(prefix + [sys.executable, "-m", "sddf.tools.probe", *CLIENT_IPS],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        results = [json.loads(line) for line in out.splitlines()]
    finally:
        monitor.send_signal(signal.SIGINT)
        try:
            monitor.wait(10)
        except subprocess.TimeoutExpired:
            monitor.kill()
    table = Table(title="echo system: driver → virt_rx → (copier →) client → virt_tx → driver")
    for col in ("client", "ping", "UDP 1 B", "UDP 1472 B", "UDP burst", "TCP 1 MiB"):
        table.add_column(col)
    ok = True
    for r in results:
        ok &= (r["ping_replies"] == r["ping_sent"] and r["udp_1B"] and r["udp_1472B"]
               and r["udp_burst_replies"] == r["udp_burst_sent"] and r["tcp_intact"])
        table.add_row(r["ip"], f"{r['ping_replies']}/{r['ping_sent']} ({', '.join(map(str, r['ping_ms']))} ms)",
                      "ok" if r["udp_1B"] else "LOST", "ok" if r["udp_1472B"] else "LOST",
                      f"{r['udp_burst_replies']}/{r['udp_burst_sent']}",
                      f"{'intact' if r['tcp_intact'] else 'CORRUPT'} {r['tcp_MBps']} MB/s")
    console.print(table)
    console.print("all echoes answered" if ok else "[bold red]some echoes failed[/]")
    return 0 if ok else 1


def main(inside: bool = False) -> int:
    if inside:
        return run_inside([])
    if can_make_named():
        with NetNamespace("demo") as ns:
            print(f"sddf demo: network namespace {ns.name}; TAP host side 10.0.0.1, "
                  f"clients {', '.join(CLIENT_IPS)}", file=sys.stderr)
            return run_inside(ns.exec_prefix())
    return subprocess.run(unshare_prefix() + [sys.executable, "-m", "sddf.cli", "demo", "--inside"]).returncode

