"""``sddf audit``: is every buffer of a running system in exactly one place?

Reads every net queue of the system and the virtualisers' ledgers (read-only maps from the
monitor) and audits the pools they carry (:mod:`sddf.net.audit`). Buffers in flight through a handler are in no queue for a
moment, so the audit looks again until it comes out clean or ``settle_s`` has passed, and
reports the last look: per pool, how many buffers it has, how many it saw, and which are
missing, doubled or foreign. Exit status 0 when clean, 1 otherwise.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from sddf.net.audit import Audit, some
from sddf.tools.top import QueueViews

Control = Callable[[dict[str, Any]], tuple[dict[str, Any], list[int]]]
LOOK_EVERY_S = 0.05


def look(views: QueueViews) -> Audit:
    """One audit of every net queue that names its pools, and of what the virtualisers' ledgers
    say they hold (a broadcast buffer with several clients, a buffer waiting for room)."""
    audit = Audit()
    for queue in views.queues:
        if queue["kind"] == "net" and queue.get("pools"):
            audit.add_queue(views.view(queue), queue["capacity"], queue["pools"])
    for ledger in views.ledgers:
        words = views.ledger_words(ledger)
        if ledger["kind"] == "net.virt_rx":
            audit.add_virt_rx_words(words, ledger["pools"][0])
        elif ledger["kind"] == "net.virt_tx":
            audit.add_virt_tx_words(words, ledger["pools"])
    return audit


def settle(views: QueueViews, settle_s: float) -> Audit:
    """Look until the audit is clean or ``settle_s`` has passed; the last look."""
    deadline = time.monotonic() + settle_s
    audit = look(views)
    while not audit.clean and time.monotonic() < deadline:
        time.sleep(LOOK_EVERY_S)
        audit = look(views)
    return audit


def table(audit: Audit) -> Table:
    out = Table(title="buffer pools")
    for column in ("pool", "buffers", "in queues", "missing", "doubled", "foreign"):
        out.add_column(column)
    for r in audit.pools.values():
        out.add_row(r.name, str(r.buffers), str(sum(r.seen.values())), f"{len(r.missing)} {some(r.missing)}",
                    f"{len(r.doubled)} {some(r.doubled)}", f"{len(r.foreign)} {some(r.foreign)}")
    return out


def audit(control: Control, settle_s: float = 2.0) -> int:
    result = settle(QueueViews(*control({"cmd": "queues"})), settle_s)
    Console().print(table(result))
    print("clean: every buffer in exactly one place" if result.clean else "NOT clean")
    return 0 if result.clean else 1
