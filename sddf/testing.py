"""An in-process test bench for components: a whole system's PDs in one process, stepped by hand.

The bench builds a system description exactly as the monitor does (real shared regions,
channels and configs) but runs no processes: each PD's component is constructed here, its
``init`` run, and :meth:`Bench.run` delivers notifications between them until the system is
quiet. Devices are fakes: a TAP irq source becomes one end of a datagram socketpair (the test
holds the other: :meth:`Bench.frames`); a timerfd is real. PPCs are made in-process: the caller's
call runs the callee's ``protected`` directly. Every notify is recorded (:attr:`Bench.notifies`).

A test can stall a PD (it gets no notifications, as under ``kill -STOP``), resume it, and
kill it and start a fresh instance on the same grants (as a restart after ``kill -9``: nothing
the dead instance held privately survives). :meth:`Bench.kill_at` kills a PD in the middle of
its work instead: just before its n-th write to shared memory (a queue move, a signal flag, a
step of its ledger's commit, a notify), as a ``kill -9`` at that instruction would.

    bench = Bench(echo_system())
    bench.start()
    frames = bench.frames("eth_driver")
    frames.send(frame); bench.run(); reply = frames.recv(2048)
"""
from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from sddf.component import Component
from sddf.devices import open_device, parse_source
from sddf.faults import on_shared_writes
from sddf.monitor import Monitor
from sddf.system import SystemDescription, load_program

FRAME_SOCKET_BUFFER = 4 * 1024 * 1024
MAX_STEPS = 100_000


class Killed(BaseException):
    """A PD killed where it stood by :meth:`Bench.kill_at` (no component code may catch it)."""


class BenchError(AssertionError):
    """The system did not settle, or a test asked for something the bench does not have."""


@dataclass(frozen=True)
class Notify:
    """One notify a component sent: from PD ``sender`` on its channel ``channel`` to PD ``receiver``."""

    sender: str
    channel: int
    receiver: str


class _DirectCall:
    """A PPC path run in-process: the caller's call is the callee's ``protected``."""

    def __init__(self, bench: "Bench", callee: str, callee_channel: int) -> None:
        self._bench, self._callee, self._channel = bench, callee, callee_channel

    def call(self, label: int, mrs: Any) -> tuple[int, list[int]]:
        out_label, out_mrs = self._bench.component(self._callee).answer_call(self._channel, label, list(mrs))
        return out_label, list(out_mrs)


class Bench:
    """A system's components in this process; see the module docstring."""

    def __init__(self, sdf: SystemDescription) -> None:
        self.sdf = sdf
        self._peers: dict[str, socket.socket] = {}  # irq source -> the test's end of a fake device
        self.monitor = Monitor(sdf, log=lambda _msg: None, devices=self._device)
        self.monitor.build()
        self.components: dict[str, Component] = {}
        self.stalled: set[str] = set()
        self.notifies: list[Notify] = []
        self._peer_of = {(ch.pd_a.name, ch.pd_a_id): ch.pd_b.name for ch in sdf.channels}
        self._peer_of.update({(ch.pd_b.name, ch.pd_b_id): ch.pd_a.name for ch in sdf.channels})
        self._running: str | None = None  # the PD whose code runs now
        self._victim: str | None = None   # the PD kill_at armed, and its writes left before dying
        self._writes_left = 0
        self._unpatch: Callable[[], None] | None = None
        #: PDs killed by kill_at, in order
        self.killed: list[str] = []
        #: shared-memory writes per PD, counted for PDs started since the first kill_at
        self.writes: Counter[str] = Counter()

    # ---- devices ------------------------------------------------------------------------
    def _device(self, source: str) -> int:
        kind, _ = parse_source(source)
        if kind != "tap":
            return open_device(source)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FRAME_SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FRAME_SOCKET_BUFFER)
        ours.setblocking(False)
        theirs.setblocking(False)
        self._peers[source] = ours
        return theirs.detach()  # the monitor owns (and closes) the device fd

    def frames(self, driver: str) -> socket.socket:
        """The host side of ``driver``'s fake TAP: send frames to it, receive what it transmits."""
        sources = [irq.source for irq in self.sdf.irqs if irq.pd.name == driver and irq.source in self._peers]
        if not sources:
            raise BenchError(f"PD {driver!r} has no TAP irq")
        return self._peers[sources[0]]

    # ---- components ---------------------------------------------------------------------
    def start(self, *names: str) -> None:
        """Construct and ``init`` the named PDs (all, highest priority first, if none named)."""
        order = names or [st.pd.name for st in sorted(self.monitor.pds.values(), key=lambda st: -st.pd.priority)]
        for name in order:
            self._spawn(name)

    def _spawn(self, name: str) -> Component:
        st = self.monitor.pds.get(name)
        if st is None:
            raise BenchError(f"no PD named {name!r}")
        component = load_program(st.program)(st.config)
        for ch, send in list(component._sends.items()):
            component._sends[ch] = self._recorder(name, ch, send)
        for ch in list(component._calls):
            callee = self._peer_of[(name, ch)]
            callee_ch = next(ch_ for (pd, ch_), peer in self._peer_of.items() if pd == callee and peer == name)
            component._calls[ch] = _DirectCall(self, callee, callee_ch)  # type: ignore[assignment]
        self.components[name] = component
        self._run_as(name, component.start)
        return component

    def _run_as(self, name: str, work: Callable[[], Any]) -> Any:
        """Run ``name``'s code; a kill_at that fires in it leaves ``name`` dead (returns None)."""
        self._running = name
        try:
            return work()
        except Killed:
            self.kill(name)
            self.killed.append(name)
            self._victim = None
            return None
        finally:
            self._running = None

    def kill_at(self, name: str, write: int) -> Component | None:
        """Restart ``name`` armed to die just before its ``write``-th write to shared memory from
        now on (see :mod:`sddf.faults`), as ``kill -9`` at that instruction:
        what it wrote before stays written. It may die in its ``init`` (then this returns None) or
        in a later step; either way it is then gone (:attr:`killed`) until restarted."""
        if write < 1:
            raise BenchError(f"write {write}: writes are counted from 1")
        self._patch_writes()
        if name in self.components:
            self.kill(name)
        self._victim, self._writes_left = name, write
        self._spawn(name)
        return self.components.get(name)

    def disarm(self) -> None:
        """Cancel a kill_at that has not fired."""
        self._victim = None

    def _patch_writes(self) -> None:
        """Count the shared-memory writes of the PD that runs (a component built after this binds
        the counting calls; undone by close)."""
        if self._unpatch is None:
            self._unpatch = on_shared_writes(self._tick)

    def _tick(self) -> None:
        if self._running is not None:
            self.writes[self._running] += 1
        if self._victim is not None and self._running == self._victim:
            self._writes_left -= 1
            if self._writes_left <= 0:
                raise Killed(self._victim)

    def _recorder(self, sender: str, ch: int, send: Callable[[], int]) -> Callable[[], int]:
        receiver = self._peer_of[(sender, ch)]

        def recorded() -> int:
            self.notifies.append(Notify(sender, ch, receiver))
            return send()
        return recorded

    def component(self, name: str) -> Any:
        got = self.components.get(name)
        if got is None:
            raise BenchError(f"PD {name!r} is not running in the bench (started: {sorted(self.components)})")
        return got

    def counters(self, name: str) -> Counter[str]:
        return self.component(name).counters

    def stall(self, name: str) -> None:
        """Stop delivering ``name``'s notifications (they stay pending), like ``kill -STOP``."""
        self.component(name)
        self.stalled.add(name)

    def resume(self, name: str) -> None:
        self.stalled.discard(name)

    def kill(self, name: str) -> None:
        """Drop ``name``'s component without letting it run again (a ``kill -9``)."""
        component = self.components.pop(name)
        component._waiter.close()
        # freed by reference counting, not left to the cycle collector: CPython 3.11 can crash
        # collecting a memoryview that a cffi pointer still exports (its tp_clear drops the view's
        # buffer while exported); emptying the component breaks its cycles (bound methods)
        vars(component).clear()
        self.stalled.discard(name)

    def restart(self, name: str) -> Component:
        """Kill ``name`` (if running) and start a fresh instance on the same grants."""
        if name in self.components:
            self.kill(name)
        return self._spawn(name)

    # ---- running ------------------------------------------------------------------------
    def step(self) -> int:
        """Let every running, unstalled PD handle what is pending now; return how many channels."""
        handled = 0
        for name, component in list(self.components.items()):
            if name not in self.stalled:
                handled += len(self._run_as(name, component.handle_pending) or ())
        return handled

    def run(self, max_steps: int = MAX_STEPS) -> int:
        """Step until no PD has anything pending; return the steps taken."""
        for steps in range(1, max_steps + 1):
            if not self.step():
                return steps
        raise BenchError(f"the system did not settle in {max_steps} steps")

    def close(self) -> None:
        for name in list(self.components):
            self.kill(name)
        for peer in self._peers.values():
            peer.close()
        if self._unpatch is not None:
            self._unpatch()
            self._unpatch = None
        self.monitor.close()

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
