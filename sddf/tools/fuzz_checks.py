"""What ``sddf fuzz`` checks after an input on the bench, and how it tells a refusal from a finding.

A PD's exception is a documented refusal (:func:`documented`) or a finding; :func:`culprit` says
whose it was. The invariants: buffer conservation over what honest PDs hold
(:func:`audit_honest`), containers that do not grow with the input (:func:`container_sizes`
before and after), and liveness: the honest side is still served (:func:`answers_ping`,
:func:`timer_wakes`).
"""
from __future__ import annotations

import socket
import time
import traceback
from collections import Counter, deque
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sddf.component import Component
from sddf.config import typed
from sddf.ledger import committed_words
from sddf.net.audit import Audit, PoolReport, some
from sddf.net.config import NetDriverConfig
from sddf.ppc import MalformedCall
from sddf.queue.ring import QueueProtocolError, RingEnd
from sddf.testing import Bench, Notify
from sddf.timer.client import REPLY_OK, SET_TIMEOUT
from sddf.tools.fuzz_input import Finding, icmp_echo, is_echo_reply

if TYPE_CHECKING:
    from sddf.tools.fuzz_bench import Arena

WALK_DEPTH = 5
PING_ID = 0x5DDF
TIMER_WAKE_S = 1.0
Liveness = Callable[["Arena"], None]


# ---- liveness: the victim still serves the honest side -------------------------------------------
def answers_ping(client: str) -> Liveness:
    """The net client ``client`` still answers a ping from the outside world."""
    def check(arena: Arena) -> None:
        mac, ip = arena.host(client)
        if arena.tap is None:
            raise Finding(f"cannot ping {client}: the system has no honest TAP driver")
        arena.drain_tap()
        arena.tap.send(icmp_echo(mac, ip, PING_ID))
        arena.settle()
        if not any(is_echo_reply(f, ip, PING_ID) for f in arena.drain_tap()):
            raise Finding(f"{client} no longer answers a ping after this input (counters: "
                          f"{ {pd: dict(c.counters) for pd, c in arena.bench.components.items()} })")
    return check


def timer_wakes(client: str) -> Liveness:
    """The timer driver (the victim) still takes ``client``'s timeout and notifies it when due."""
    def check(arena: Arena) -> None:
        bench = arena.bench
        bench.stall(client)  # its own rounds would take the probe's notification for one of theirs
        ch = next(c.pd_a_id if c.pd_a.name == arena.victim else c.pd_b_id for c in bench.sdf.channels
                  if {c.pd_a.name, c.pd_b.name} == {arena.victim, client})
        label, _ = bench.component(arena.victim).answer_call(ch, SET_TIMEOUT, [0])
        woken, deadline = Notify(arena.victim, ch, client), time.monotonic() + TIMER_WAKE_S
        mark = len(bench.notifies)
        while woken not in bench.notifies[mark:]:
            if label != REPLY_OK or time.monotonic() > deadline:
                raise Finding(f"the timer no longer wakes {client} (SET_TIMEOUT answered {label})")
            arena.settle()
            time.sleep(0.001)
    return check


# ---- refusals and findings -----------------------------------------------------------------
def culprit(exc: BaseException) -> Component | None:
    """The component whose code raised ``exc`` (the innermost on its traceback)."""
    found = None
    for frame_, _ in traceback.walk_tb(exc.__traceback__):
        if isinstance(obj := frame_.f_locals.get("self"), Component):
            found = obj
    return found


def documented(exc: Exception, pd: Component) -> bool:
    """Whether ``exc`` is a refusal sDDF documents: a malformed PPC, or a queue protocol error
    raised by an end that reports to nobody (an end with ``on_refuse`` must recover instead)."""
    if isinstance(exc, MalformedCall):
        return True
    return isinstance(exc, QueueProtocolError) and not any(
        isinstance(end, RingEnd) and end.name == exc.queue and end.on_refuse is not None for _, end in walk(pd))


# ---- what a component holds ---------------------------------------------------------------
_LEAVES = (str, bytes, int, float, bool, complex, type(None), memoryview, type, ModuleType, FunctionType,
           MethodType, socket.socket)
_CONTAINERS = (list, tuple, dict, set, frozenset, deque, bytearray)


def walk(root: Any, depth: int = WALK_DEPTH) -> Iterator[tuple[str, Any]]:
    """(path, object) for what ``root`` reaches through attributes and container items, ``depth``
    levels deep, each object once."""
    seen, todo = {id(root)}, [("", root, 0)]
    while todo:
        path, obj, level = todo.pop()
        for key, child in _children(obj):
            if isinstance(child, _LEAVES) or id(child) in seen:
                continue
            seen.add(id(child))
            yield path + key, child
            if level + 1 < depth:
                todo.append((path + key, child, level + 1))


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        return ((f"[{key!r:.40}]", value) for key, value in obj.items())
    if isinstance(obj, (list, tuple, deque, set, frozenset)):
        return ((f"[{i}]", item) for i, item in enumerate(obj))
    if isinstance(obj, (bytearray, Counter)) or not hasattr(obj, "__dict__"):
        return iter(())
    return ((f".{name}", value) for name, value in vars(obj).items())


def container_sizes(root: Any) -> dict[str, int]:
    """The length of every container ``root`` reaches (see :func:`walk`), by path."""
    return {path: len(obj) for path, obj in walk(root) if isinstance(obj, _CONTAINERS)}


# ---- buffer conservation -------------------------------------------------------------------
def audit_honest(bench: Bench, hostile: set[str]) -> tuple[Audit, set[str]]:
    """An audit of every net queue no ``hostile`` PD maps, the honest virtualisers' ledger words and
    honest TAP drivers' spare rx buffers; and the pools that some hostile PD's queue carries."""
    sdf, audit, forged = bench.sdf, Audit(), set()
    hostile_regions = {m.region.name for pd in sdf.pds if pd.name in hostile for m in pd.maps}
    pools = {q.region: q.pools for q in sdf.queues}
    for q in sdf.queues:
        if q.kind != "net" or not q.pools:
            continue
        if q.region in hostile_regions:
            forged |= {pool for pool, _, _ in q.pools}
        else:
            audit.add_queue(bench.monitor.regions[q.region].view[q.offset:], q.capacity, q.pools)
    for ledger in sdf.ledgers:
        if ledger.pd not in hostile:
            state = bench.monitor.pds[ledger.pd]
            assert state.ledger is not None
            words = committed_words(state.ledger.view, state.pd.ledger_words)
            if ledger.kind == "net.virt_rx":
                audit.add_virt_rx_words(words, ledger.pools[0])
            else:
                audit.add_virt_tx_words(words, ledger.pools)
    driver: Any
    for name, driver in bench.components.items():  # spare rx buffers, unless the hostile side gave them
        if name not in hostile and driver.kind == "net.driver":
            config = typed(NetDriverConfig, sdf.pd(name).config, name)
            if config.rx.free not in hostile_regions:
                audit.add(driver.spare, pools[config.rx.free])
    return audit, forged


def pool_problems(report: PoolReport, forged: bool) -> list[str]:
    """What is wrong with a pool: doubled or foreign buffers, or (unless a hostile PD's queues
    carry it) missing ones."""
    found = {"doubled": report.doubled, "foreign": report.foreign, "missing": [] if forged else report.missing}
    return [f"{len(offsets)} {what} {some(offsets)}" for what, offsets in found.items() if offsets]
