"""``sddf top``: a live table of a running system's PDs (state, CPU, restarts) and queues.

Queue occupancy is read straight from the queue headers through read-only maps of the
regions, whose fds the monitor hands over the control socket.
"""
from __future__ import annotations

import mmap
import os
import time
from typing import Any, Callable

import psutil
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sddf import atomic
from sddf.ledger import committed_words
from sddf.control import Reply, Request
from sddf.occupancy import occupancy

Control = Callable[[Request], tuple[Reply, list[int]]]

class QueueViews:
    """Read-only maps of the regions that hold queues."""

    def __init__(self, reply: dict[str, Any], fds: list[int]) -> None:
        self.queues = reply["queues"]
        self.ledgers = reply.get("ledgers", [])
        self.maps = []
        for name, fd in zip(reply["regions"], fds):
            self.maps.append(mmap.mmap(fd, reply["sizes"][name], mmap.MAP_SHARED, mmap.PROT_READ))
            os.close(fd)
        self.ptrs = [atomic.pointer(m) for m in self.maps]

    def view(self, queue: dict[str, Any]) -> memoryview:
        """The bytes of ``queue`` (one of :attr:`queues`), read-only."""
        return memoryview(self.maps[queue["fd_index"]])[queue["offset"]:]

    def ledger_words(self, ledger: dict[str, Any]) -> list[int]:
        """The committed words of ``ledger`` (one of :attr:`ledgers`)."""
        return committed_words(self.maps[ledger["fd_index"]], ledger["words"])

    def rows(self) -> list[tuple[str, int, int]]:
        return [(q["label"], occupancy(self.ptrs[q["fd_index"]], q["offset"], q["kind"]), q["capacity"])
                for q in self.queues]


def _render(status: dict[str, Any], procs: dict[int, psutil.Process], views: QueueViews) -> Group:
    pds = Table(title=f"system {status['system']!r}")
    for col in ("PD", "state", "pid", "CPU %", "restarts", "wake-ups", "found no work", "program"):
        pds.add_column(col)
    for pd in status["pds"]:
        cpu = ""
        if pd["pid"] is not None:
            proc = procs.get(pd["pid"])
            if proc is None:
                proc = procs[pd["pid"]] = psutil.Process(pd["pid"])
            try:
                cpu = f"{proc.cpu_percent(None):5.1f}"
            except psutil.Error:
                cpu = "-"
        pds.add_row(pd["name"], pd["state"], str(pd["pid"] or "-"), cpu, str(pd["restarts"]),
                    str(pd.get("wakeups", "")), str(pd.get("unproductive_wakeups", "")), pd["program"])
    queues = Table(title="queues")
    for col in ("queue", "occupancy", "capacity"):
        queues.add_column(col)
    for label, used, cap in views.rows():
        queues.add_row(label, str(used), str(cap))
    return Group(pds, queues)


def top(control: Control, interval: float = 1.0, once: bool = False) -> int:
    views = QueueViews(*control({"cmd": "queues"}))
    procs: dict[int, psutil.Process] = {}
    console = Console()
    if once:
        _render(control({"cmd": "status"})[0], procs, views)  # primes CPU counters
        time.sleep(min(interval, 0.5))
        console.print(_render(control({"cmd": "status"})[0], procs, views))
        return 0
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(_render(control({"cmd": "status"})[0], procs, views), refresh=True)
                time.sleep(interval)
    except (KeyboardInterrupt, SystemExit):
        return 0
