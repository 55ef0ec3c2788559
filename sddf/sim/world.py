"""One seeded simulation: a system's real components in this process, driven by the scheduler.

The system is built as the monitor builds it (real regions, channels, configs, ledgers); its devices
are the simulator's (:mod:`sddf.sim.devices`). Each PD's component is the real class, constructed
here after the memory models are installed (:mod:`sddf.sim.models`), with four things rewired: its
notifies post a delivery to the scheduler instead of writing an eventfd (a notify is a locked
exchange, so it drains the sender's stores), its PPCs run the callee's ``protected`` in-process, its
waiter returns the channel the scheduler delivers (then ``handle_pending`` runs ``notified``, the
ledger's commit and the deferred notifies, as the loop does), and its log goes to the trace.

Concurrency: every shared-memory access is a scheduling point where, by the seed, another PD's
pending delivery may run to completion first (as a preempting PD on one core, or one running on
another core in between two of this PD's instructions), or some PD's oldest buffered stores drain.
Faults: a PD killed before its n-th shared-memory write and restarted later (``kill``: only PDs
whose ``fault_policy`` is "restart"), a frame lost on the wire either way (``drop``), a PD stalled
for a while as a flood of frames to one client arrives, so that queues run full (``full``). PDs
that answer PPCs are neither killed nor stalled (their callers would fault too).
"""
from __future__ import annotations

import gc
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeVar

from sddf import atomic
from sddf.channel import Waiter
from sddf.component import Component
from sddf.faults import on_shared_writes
from sddf.monitor import Monitor
from sddf.net.queue import LAYOUT as NET_LAYOUT
from sddf.ppc import PPC_CALLEE_FAULTED
from sddf.sim.devices import Client, Devices, IrqLine
from sddf.sim.invariants import Conservation, Key, Queues, describe, idle_work, index_problems, lost_wakeups
from sddf.sim.memory import Memory
from sddf.sim.models import MASKS, Models, install
from sddf.sim.scheduler import Event, Scheduler
from sddf.system import SystemDescription, load_program
from sddf.testing import Killed

FAULTS = ("kill", "drop", "full")
NET_FLAG = NET_LAYOUT.flag_offset
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """How to simulate: steps per seed, store buffers on or off, which faults, trace lines kept."""

    steps: int = 2000
    tso: bool = True
    faults: frozenset[str] = frozenset()
    trace: int = 40
    preempt: float = 0.03  # chance that a shared-memory access lets a pending handler run first
    drain: float = 0.05    # chance that a shared-memory access drains some PD's oldest stores
    traffic_gap_ns: tuple[int, int] = (20_000, 1_000_000)
    fault_gap_ns: tuple[int, int] = (1_000_000, 10_000_000)


class Failure(BaseException):
    """An invariant broke (component code cannot catch it)."""


@dataclass
class Result:
    """One seed's run: ``failure`` is None if every invariant held."""

    seed: int
    steps: int
    seconds: float
    digest: str
    trace: list[str]
    failure: str | None = None


class _Waiter:
    """Stands in for a component's Waiter: the scheduler says which channel is ready."""

    def __init__(self, real: Waiter, ack: Callable[[int], None]) -> None:
        self.real, self.ack = real, ack
        self.ready: list[int] = []
        # the wake-up accounting pd_wait keeps in C (sddf/_ring.c), kept here instead
        self.wakeups = self.unproductive = self.seen = 0
        self.handled: list[int] = []
        self.by_channel: Counter[int] = Counter()

    def wait(self, _timeout: float | None = None) -> list[int]:
        self.settle()
        ready, self.ready = self.ready, []
        self.handled, self.seen = list(ready), self.real.progress()
        self.wakeups += len(ready)
        return ready

    def settle(self) -> None:
        if self.handled and self.real.progress() == self.seen:
            self.unproductive += len(self.handled)
            self.by_channel.update(self.handled)
        self.handled = []

    def wake_counts(self) -> tuple[int, int, dict[int, int]]:
        return self.wakeups, self.unproductive, dict(self.by_channel)

    def irq_ack(self, fd: int, _events: int = 0) -> None:
        self.ack(fd)

    def close(self) -> None:
        self.real.close()


class _Call:
    """A PPC path run in-process under the simulator."""

    def __init__(self, world: "World", caller: str, callee: str, channel: int) -> None:
        self.world, self.caller, self.callee, self.channel = world, caller, callee, channel

    def call(self, label: int, mrs: Any) -> tuple[int, list[int]]:
        return self.world.call(self.caller, self.callee, self.channel, label, list(mrs))


class World:
    """A system under simulation for one seed; :meth:`run` it once."""

    def __init__(self, sdf: SystemDescription, seed: int, options: Options) -> None:
        self.sdf, self.seed, self.options = sdf, seed, options
        self.sched = Scheduler(seed, options.trace)
        self.memory = Memory(options.tso)
        self.queues = Queues()
        #: the host's epoch: a frame sent in an earlier one may go unanswered (a fault disturbed the
        #: system after it was sent); it moves at each fault and once the system is idle after it
        self.epoch = 0
        self.settling = False  # a fault disturbed the system, which has not been idle since
        self.live = True  # traffic and faults still come
        clients = [Client(pd.name, bytes(pd.config["mac"]), str(pd.config["ip"]))
                   for pd in sdf.pds if "mac" in pd.config and "ip" in pd.config]
        self.devices = Devices(self.sched, clients, lambda: self.epoch)
        self.monitor = Monitor(sdf, log=lambda _msg: None, devices=self.devices.open)
        self.components: dict[str, Component] = {}
        self.tables: dict[str, list[tuple[int, int, str]]] = {}  # PD -> its maps: (start, end, region)
        self.lines: dict[tuple[str, int], IrqLine] = {}  # (PD, irq fd) -> its irq line
        self.pending: dict[tuple[str, int], Event] = {}  # (PD, channel) -> its delivery
        self.parked: dict[str, set[int]] = {}  # channels notified while their PD was dead or stalled
        self.stalled: set[str] = set()
        self.victim: list[Any] | None = None  # [PD, writes left before it dies]
        self.generators: list[Event] = []  # the next traffic burst and fault
        self.peer = {(ch.pd_a.name, ch.pd_a_id): (ch.pd_b.name, ch.pd_b_id) for ch in sdf.channels}
        self.peer.update({(ch.pd_b.name, ch.pd_b_id): (ch.pd_a.name, ch.pd_a_id) for ch in sdf.channels})
        self.callees = _callees(sdf)
        self.servers = set().union(*self.callees.values())
        #: where each net queue's signal flag is -> the queue
        self.flags = {(q.region, q.offset + NET_FLAG): (q.region, q.offset) for q in sdf.queues if q.kind == "net"}
        self._undo: list[Callable[[], None]] = []
        self.started: set[str] = set()  # PDs whose init has completed at least once

    # ---- running --------------------------------------------------------------------------------
    def run(self) -> Result:
        started = time.perf_counter()
        failure = None
        try:
            self._setup()
            self._loop(self.options.steps)
            if self.generators:
                self._wind_down()
        except Failure as exc:
            failure = str(exc)
            self.sched.log(f"FAILED: {failure.splitlines()[0]}")
        finally:
            self._close()
        return Result(self.seed, self.sched.step, time.perf_counter() - started, self.sched.digest,
                      list(self.sched.tail), failure)

    def _setup(self) -> None:
        self.monitor.build()
        self.conservation = Conservation(self.sdf, self.monitor.regions,
                                         {name: st.ledger for name, st in self.monitor.pds.items()})
        self._undo.append(self.conservation.close)
        for name, st in self.monitor.pds.items():
            for ch, fd in st.config.irqs.items():
                self.lines[(name, fd)] = self.devices.bind(name, ch, fd, partial(self._post, why="irq"))
        self.devices.install()
        self._undo.append(self.devices.close)
        self._undo.append(install(Models(self.memory, self)))
        if "kill" in self.options.faults:
            self._undo.append(on_shared_writes(self._before_write))
        rng = self.sched.rng
        order = sorted(self.monitor.pds, key=lambda name: (-self.monitor.pds[name].pd.priority, rng.random()))
        for i, name in enumerate(order):  # as the monitor starts them: highest priority first
            self.sched.at(i * 1000, f"start {name}", partial(self._spawn, name))
        if any(tap.host.clients for tap in self.devices.taps):
            self._every(self.options.traffic_gap_ns, "traffic", self._traffic)
        if self.options.faults:
            self._every(self.options.fault_gap_ns, "fault", self._fault)

    def _loop(self, steps: int, until_idle: bool = False) -> None:
        sched, limit = self.sched, self.sched.step + steps
        while sched.step < limit:
            if sched.quiescent and self._quiet() and until_idle:
                return
            event = sched.pop()
            if event is None:
                return
            sched.step += 1
            sched.log(event.label)
            event.action()
            self._check()

    def _wind_down(self) -> None:
        """No more traffic or faults: run until the system is idle (or as many steps again), then check."""
        self.live = False
        self.victim = None
        for event in self.generators:
            self.sched.cancel(event)
        self.sched.log("wind down: no more traffic or faults")
        self._loop(self.options.steps, until_idle=True)

    def _quiet(self) -> bool:
        """The system is quiescent: drain the store buffers and check it is not stuck; True if it
        is idle (no PD stalled, no timer armed: nothing will happen but traffic)."""
        drained = self.memory.drain_all()
        if drained:
            self.sched.log(f"quiescent: {drained} buffered stores drained")
        problems = lost_wakeups(self.sdf, self.monitor.regions, self.queues)
        idle = not self.stalled and not self.devices.timers_armed
        if idle:
            if self.settling:
                # idle again after a fault: frames sent while it recovered may have been dropped by
                # contract (a copier whose client had no free buffer), so they are excused too
                self.epoch += 1
                self.settling = False
            problems += idle_work(self.sdf, self.monitor.regions)
            for tap in self.devices.taps:
                problems += tap.host.unanswered()
        self._fail(problems)
        return idle

    def _check(self) -> None:
        """The invariants after a step (module :mod:`sddf.sim.invariants`)."""
        problems = self.devices.poll()
        with self.memory.applied():
            problems += index_problems(self.sdf, self.monitor.regions)
            if len(self.started) == len(self.monitor.pds):  # buffers are handed out by first inits
                problems += self.conservation.problems()
        self._fail(problems)
        for pd in list(self.memory.buffers):
            if self.memory.pending(pd) and self.sched.chance(0.5):
                self._drain(pd)

    def _fail(self, problems: list[str]) -> None:
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise Failure(f"step {self.sched.step}: {problems[0]}{more}")

    def _close(self) -> None:
        self.memory.buffers.clear()  # what is still buffered points into the components' maps
        for component in self.components.values():
            component._waiter.close()
        self.components.clear()
        for undo in reversed(self._undo):
            undo()
        self.monitor.close()
        # components are cyclic garbage holding maps that cffi pointers export; left to the
        # interpreter's exit, collecting them crashes it (as after a Bench): collect them now
        gc.collect()

    # ---- PDs ------------------------------------------------------------------------------------
    def _run(self, name: str, work: Callable[[], T]) -> T | None:
        """Run ``name``'s code: a kill there leaves it dead; any other exception is a failure."""
        with self.memory.running(name):
            try:
                return work()
            except Killed:
                self._died(name)
            except Exception as exc:
                where = "".join(traceback.format_exception(exc)[-4:])
                raise Failure(f"PD {name} faulted: {exc!r}\n{where}") from exc
        return None

    def _spawn(self, name: str) -> None:
        st = self.monitor.pds[name]

        def start() -> None:
            with self.memory.unbuffered():  # see Memory.unbuffered
                component = self.components[name] = load_program(st.program)(st.config)
            self._rewire(name, component)
            component.start()
        self._run(name, start)
        if name in self.components:
            self.started.add(name)
            self._unpark(name)  # what it was notified of before it ran

    def _rewire(self, name: str, component: Component) -> None:
        """Notifies, PPCs, irq acks and the log go through the simulator (module docstring)."""
        region_of = {m.local_name: m.region.name for m in self.monitor.pds[name].pd.maps}
        table = self.tables[name] = []
        for local, view in component.regions.items():
            start = atomic.address(atomic.pointer(view))
            table.append((start, start + len(view), region_of[local]))
        ack = lambda fd: self.lines[(name, fd)].ack()  # noqa: E731
        component._waiter = _Waiter(component._waiter, ack)  # type: ignore[assignment]
        for ch in component._sends:
            component._sends[ch] = partial(self._notify, name, ch)
        for ch in component._calls:
            component._calls[ch] = _Call(self, name, *self.peer[(name, ch)])  # type: ignore[assignment]
        component.log = lambda message: self.sched.log(f"{name} says: {message}")  # type: ignore[method-assign]

    def _notify(self, sender: str, ch: int) -> int:
        self.memory.drain(sender)  # a notify is a locked exchange on the notification word
        receiver, receiver_ch = self.peer[(sender, ch)]
        already = " (pending already)" if (receiver, receiver_ch) in self.pending else ""
        self.sched.log(f"{sender} notifies {receiver}{already}")
        self._post(receiver, receiver_ch, f"from {sender}")
        return 1

    def _post(self, pd: str, ch: int, why: str) -> None:
        """Deliver ``ch`` to ``pd`` after a seeded latency (coalesced with one still pending)."""
        if (pd, ch) not in self.pending:
            self.pending[(pd, ch)] = self.sched.at(self.sched.delay(), f"deliver {pd} ch{ch} ({why})",
                                                   partial(self._deliver, pd, ch))

    def _deliver(self, pd: str, ch: int) -> None:
        del self.pending[(pd, ch)]
        component = self.components.get(pd)
        if component is None or pd in self.stalled:
            self.parked.setdefault(pd, set()).add(ch)
            return
        component._waiter.ready = [ch]  # type: ignore[attr-defined]
        self._run(pd, component.handle_pending)

    def _unpark(self, pd: str) -> None:
        for ch in sorted(self.parked.pop(pd, ())):
            self._post(pd, ch, "held")

    def call(self, caller: str, callee: str, ch: int, label: int, mrs: list[int]) -> tuple[int, list[int]]:
        """``caller``'s PPC into ``callee`` (in-process; "callee faulted" if it is dead)."""
        component = self.components.get(callee)
        self.sched.log(f"ppc {caller} → {callee} label {label}")
        if component is None:
            return PPC_CALLEE_FAULTED, []
        reply = self._run(callee, partial(component.answer_call, ch, label, mrs))
        return (reply[0], list(reply[1])) if reply is not None else (PPC_CALLEE_FAULTED, [])

    # ---- faults ---------------------------------------------------------------------------------
    def _before_write(self) -> None:
        if self.victim is not None and self.memory.current == self.victim[0]:
            self.victim[1] -= 1
            if self.victim[1] <= 0:
                raise Killed(self.victim[0])

    def _died(self, name: str) -> None:
        self.victim = None
        self.components.pop(name)._waiter.close()
        drained = self.memory.drain(name)  # what it stored before it died still reaches memory
        self._disturb()
        self.sched.log(f"{name} killed ({drained} buffered stores drained)")
        self.sched.at(self._between(100_000, 2_000_000), f"restart {name}", partial(self._restart, name))

    def _restart(self, name: str) -> None:
        self._disturb()
        self._spawn(name)
        if name in self.components:
            for (pd, _fd), line in self.lines.items():
                if pd == name:
                    line.ack()  # a fresh instance's irqs start unmasked

    def _fault(self) -> None:
        rng = self.sched.rng
        kind = rng.choice(sorted(self.options.faults))
        self._disturb()
        movable = sorted(set(self.components) - self.servers - self.stalled)
        restartable = [name for name in movable if self.monitor.pds[name].pd.fault_policy == "restart"]
        if kind == "kill" and restartable:
            self.victim = [rng.choice(restartable), rng.randrange(1, 40)]
            self.sched.log(f"fault: {self.victim[0]} will die before its write {self.victim[1]} from now")
        elif kind == "drop" and self.devices.taps:
            tap = rng.choice(self.devices.taps)
            tap.drop_next = rng.choice(("in", "out"))
            self.sched.log(f"fault: the next frame {tap.drop_next} is lost")
        elif kind == "full" and movable:
            self._fill(rng.choice(movable))

    def _fill(self, victim: str) -> None:
        """Stall ``victim`` for a while; if the host can reach some client, flood it — the victim if
        it is one — with more frames than a pool holds, so queues toward the victim run full."""
        self.stalled.add(victim)
        self.sched.log(f"fault: {victim} stalled")
        self.sched.at(self._between(200_000, 5_000_000), f"resume {victim}", partial(self._resume, victim), True)
        reachable = [(tap, client) for tap in self.devices.taps for client in tap.host.clients]
        if reachable:
            tap, client = next(((t, c) for t, c in reachable if c.name == victim), self.sched.rng.choice(reachable))
            tap.host.flood(client, self._between(600, 1200))

    def _disturb(self) -> None:
        """A fault struck (or a PD it stopped came back): frames sent so far may go unanswered."""
        self.epoch += 1
        self.settling = True

    def _resume(self, pd: str) -> None:
        self.stalled.discard(pd)
        self._disturb()
        self._unpark(pd)

    # ---- the world ------------------------------------------------------------------------------
    def _every(self, gap: tuple[int, int], label: str, action: Callable[[], None]) -> None:
        """Run ``action`` at seeded intervals while the run is live."""
        def again() -> None:
            self.generators.remove(event)
            action()
            if self.live:
                self._every(gap, label, action)
        event = self.sched.at(self._between(*gap), label, again, background=True)
        self.generators.append(event)

    def _traffic(self) -> None:
        for tap in self.devices.taps:
            if tap.host.clients:
                tap.host.burst(self.sched.rng.randrange(1, 9))

    def _between(self, lo: int, hi: int) -> int:
        return self.sched.rng.randrange(lo, hi)

    def _drain(self, pd: str) -> None:
        count = self.sched.rng.randrange(1, self.memory.pending(pd) + 1)
        self.memory.drain(pd, count)
        self.sched.log(f"drain {pd}: {count} stores")

    # ---- what the models report (sddf.sim.models.Observer) --------------------------------------
    def point(self) -> None:
        if not self.memory.stack:
            return
        x = self.sched.rng.random()
        if x < self.options.drain:
            pds = [pd for pd in self.memory.buffers if self.memory.pending(pd)]
            if pds:
                self._drain(self.sched.rng.choice(pds))
        elif x < self.options.drain + self.options.preempt:
            self._preempt()

    def _preempt(self) -> None:
        """Run the earliest pending delivery to a PD that may run now, inside the current handler."""
        on_stack = set(self.memory.stack)
        ready = [event for (pd, _ch), event in self.pending.items()
                 if pd in self.components and pd not in self.stalled and pd not in on_stack
                 and not self.callees[pd] & on_stack]
        if not ready:
            return
        event = min(ready)
        self.sched.take(event)
        self.sched.step += 1
        self.sched.log(f"preempt {self.memory.current}: {event.label}")
        event.action()

    def _key(self, address: int) -> Key | None:
        """The region and offset the running PD's ``address`` is at."""
        for start, end, region in self.tables.get(self.memory.current or "", ()):
            if start <= address < end:
                return region, address - start
        return None

    def put(self, ring: Any, index: int, data: bytes) -> None:
        key = self._key(atomic.address(ring.header))
        if key is not None:
            self.queues.put(key, index, data, ring.entry_size, MASKS[ring.index_bits])

    def took(self, ring: Any, index: int, data: bytes) -> None:
        key = self._key(atomic.address(ring.header))
        problem = self.queues.took(key, index, data, ring.entry_size, MASKS[ring.index_bits]) if key else None
        if problem:
            self._fail([problem])

    def refused(self, ring: Any, what: str) -> None:
        key = self._key(atomic.address(ring.header))
        self._fail([f"{self.memory.current} refused its peer on queue {describe(key) if key else '?'}: {what}"])

    def flag(self, ptr: Any, off: int, value: int) -> None:
        key = self._key(atomic.address(ptr) + off)
        if key in self.flags:
            self.queues.flag(self.flags[key], value)


def _callees(sdf: SystemDescription) -> dict[str, set[str]]:
    """Every PD a PD may call, directly or through the PDs it calls."""
    direct: dict[str, set[str]] = {pd.name: set() for pd in sdf.pds}
    for ch in sdf.channels:
        if ch.pp_a:
            direct[ch.pd_a.name].add(ch.pd_b.name)
        if ch.pp_b:
            direct[ch.pd_b.name].add(ch.pd_a.name)
    closed = {}
    for name in direct:
        seen, todo = set(), list(direct[name])
        while todo:
            callee = todo.pop()
            if callee not in seen:
                seen.add(callee)
                todo += direct[callee]
        closed[name] = seen
    return closed
