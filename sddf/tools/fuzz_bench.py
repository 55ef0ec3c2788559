"""Fuzzing one component through the test bench, with the fuzzer playing its hostile peers.

A :class:`Scenario` names a system, the PD under fuzz (the *victim*) and the PDs the fuzzer
plays (*hostile*: stalled in the bench, so that their queues, the regions they may write, their
notifications and their calls are the fuzzer's). Each input runs on a fresh bench
(:class:`Arena`) as a list of operations: forge descriptors at a net queue's tail (naming buffers
of its pools, with frames written into them, or anything at all), take entries off its head, set
any header field, write bytes anywhere the hostile PDs may write, notify or call the victim, send
a frame from the outside world, restart the victim, repeat the last operation. Whatever a PD raises other than a
documented refusal (:func:`documented`) is a finding; a refusal faults the PD, which restarts as
under the monitor. At the end every hostile peer notifies the victim once more, the system
settles, and the invariants are checked: every buffer the hostile PDs could not forge is in
exactly one place, no honest queue holds more than its capacity, the victim's containers did not
grow with the input, and the scenario's honest clients are still served (:mod:`sddf.tools.fuzz_checks`).
"""
from __future__ import annotations

import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sddf import atomic
from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE
from sddf.ppc import MalformedCall, read_message, write_message
from sddf.queue.ring import RingEnd
from sddf.shm import PAGE_SIZE
from sddf.system import QueueInfo, SystemDescription
from sddf.testing import Bench
from sddf.tools.fuzz_checks import (Liveness, audit_honest, container_sizes, culprit, documented, pool_problems,
                                    walk)
from sddf.tools.fuzz_input import Draw, Finding, TcpPeer, arp_answer, frame, ppc_message

MAX_OPS = 256          # operations per input
MAX_FRAMES = 128       # frames from the outside world per input (a quarter of the echo system's rx pool)
MAX_REPEAT = 16
MAX_WRITE = 64
MAX_STEPS = 10_000     # bench steps to settle before a notification loop is a finding
MAX_RESTARTS = 3       # a PD faulting more often in one input stays down, as the monitor gives up
GROWTH_SLACK = 4096    # what a victim's container may grow by beyond the capacity of its queues
TAP_READ = 65536
DESC = struct.Struct("<QHB")


@dataclass(frozen=True)
class Scenario:
    """The victim PD of a system, the PDs the fuzzer plays (None: every PD that may write a region
    the victim maps or call it), and what must still work afterwards."""

    system: Callable[[], SystemDescription]
    victim: str
    hostile: tuple[str, ...] | None = None
    liveness: tuple[Liveness, ...] = ()

    def __call__(self, data: bytes) -> None:
        """Run one input (the target function)."""
        with Bench(self.system()) as bench:
            bench.start()
            Arena(bench, self).run(Draw(data))


TAIL, HEAD, FLAG = 0, 2, 4  # a net queue header's fields (byte offsets)


class _Queue:
    """A net queue as a hostile PD maps it. Each access makes its own pointer into the mapping, so
    nothing here holds an export of it once the access is done."""

    def __init__(self, info: QueueInfo, view: memoryview) -> None:
        self.info, self._view = info, view

    def load(self, field: int) -> int:
        return atomic.load_acquire_u16(atomic.pointer(self._view), self.info.offset + field)

    def store(self, field: int, value: int) -> None:
        """Store ``value`` into a header field (the flag is a u32, the indices u16s)."""
        store, mask = (atomic.store_release_u32, 0xFFFFFFFF) if field == FLAG else (atomic.store_release_u16, 0xFFFF)
        store(atomic.pointer(self._view), self.info.offset + field, value & mask)

    def _slot(self, index: int) -> int:
        return self.info.offset + HEADER_SIZE + DESC_SIZE * (index % self.info.capacity)

    def write(self, index: int, address: int, length: int, oid: int) -> None:
        DESC.pack_into(self._view, self._slot(index), address, length, oid)

    def address(self, index: int) -> int:
        return DESC.unpack_from(self._view, self._slot(index))[0]


class Arena:
    """One input's bench, victim and hostile peers (see the module docstring)."""

    def __init__(self, bench: Bench, scenario: Scenario) -> None:
        sdf = bench.sdf
        self.bench, self.victim = bench, scenario.victim
        self.liveness = scenario.liveness
        self.hostile = set(scenario.hostile if scenario.hostile is not None else hostile_peers(sdf, self.victim))
        for name in self.hostile:
            bench.stall(name)
        victim_pd = sdf.pd(self.victim)
        mapped = {m.region.name for m in victim_pd.maps}
        self.hostile_regions = {m.region.name for pd in sdf.pds if pd.name in self.hostile for m in pd.maps}
        self.regions = _hostile_views(bench, self.hostile, mapped)
        self.queues = [_Queue(q, self.regions[q.region]) for q in sdf.queues
                       if q.kind == "net" and q.region in self.regions]
        self.notifiers = [(peer, peer_ch) for peer, peer_ch, _, _ in self._channels()]
        self.calls = [victim_ch for _, _, victim_ch, can_call in self._channels() if can_call]
        self.tap = _tap(bench, self.hostile)
        self.hosts = _hosts(sdf, self.victim)
        self.peer = TcpPeer()
        self.taken: deque[int] = deque(maxlen=1024)  # addresses the hostile peers took off queues
        self.frames_left = MAX_FRAMES
        self.faults: Counter[str] = Counter()
        self.growth_limit = GROWTH_SLACK + sum(q.capacity for q in sdf.queues if q.kind == "net" and q.region in mapped)
        self.baseline = container_sizes(bench.component(self.victim))

    def _channels(self) -> Iterator[tuple[str, int, int, bool]]:
        """(hostile PD, its channel id, the victim's channel id, whether it may call the victim)."""
        for ch in self.bench.sdf.channels:
            for us, them, our_id, their_id, they_call in ((ch.pd_a, ch.pd_b, ch.pd_a_id, ch.pd_b_id, ch.pp_b),
                                                          (ch.pd_b, ch.pd_a, ch.pd_b_id, ch.pd_a_id, ch.pp_a)):
                if us.name == self.victim and them.name in self.hostile:
                    yield them.name, their_id, our_id, they_call

    # ---- one input ----------------------------------------------------------------------
    def run(self, draw: Draw) -> None:
        ops = [op for op, usable in ((self._produce, self.queues), (self._consume, self.queues),
                                     (self._header, self.queues), (self._write, self.regions),
                                     (self._notify, self.notifiers), (self._call, self.calls),
                                     (self._frame, self.tap), (self._restart, True)) if usable]
        last: Callable[[], None] | None = None
        for _ in range(MAX_OPS):
            if draw.exhausted or not ops:
                break
            if last is not None and draw.chance(len(ops) + 1):
                again, repeat = last, 1 + draw.below(MAX_REPEAT)
                for _ in range(repeat):
                    again()
                continue
            last = draw.pick(ops)(draw)
            last()
        for peer, peer_ch in self.notifiers:
            self._send(peer, peer_ch)
        self.settle()
        self.check()

    # ---- operations: each draws its arguments and returns the act -----------------------------
    def _produce(self, draw: Draw) -> Callable[[], None]:
        """Forge descriptors at a queue's tail, then publish them, leave them unpublished or move
        the tail anywhere."""
        q = draw.pick(self.queues)
        count = draw.maybe(1 + draw.below(8), lambda: draw.below(q.info.capacity + 1))
        descs = [self._descriptor(draw, q) for _ in range(count)]
        jump = draw.maybe(None, lambda: draw.uint(2))

        def act() -> None:
            tail = q.load(TAIL)
            for i, (address, length, oid, content) in enumerate(descs):
                q.write(tail + i, address, length, oid)
                if content is not None:
                    view, at, data = content
                    view[at:at + len(data)] = data
            q.store(TAIL, tail + (len(descs) if jump is None else jump))
        return act

    def _descriptor(self, draw: Draw, q: _Queue) -> tuple[int, int, int, tuple[memoryview, int, bytes] | None]:
        """(address, length, oid, (region, offset, a frame to write there) or None) naming mostly a
        buffer of the queue's pools, a buffer the hostile side took earlier, or a near miss, or anything."""
        pool, base, size = draw.pick(q.info.pools) if q.info.pools else ("", 0, NET_BUFFER_SIZE)
        offset = draw.below(max(size // NET_BUFFER_SIZE, 1)) * NET_BUFFER_SIZE
        kind = draw.maybe("pool", lambda: draw.pick(("taken", "near", "any")), 4)
        address = {"pool": lambda: base + offset,
                   "taken": lambda: self.taken[draw.below(len(self.taken))] if self.taken else base,
                   "near": lambda: base + offset + draw.pick((1, NET_BUFFER_SIZE // 2, -NET_BUFFER_SIZE, size)),
                   "any": lambda: draw.uint(8)}[kind]() % (1 << 64)
        content = None
        if kind == "pool" and pool in self.regions and draw.chance(2):
            content = (self.regions[pool], offset, frame(draw, self.hosts, self.peer)[:NET_BUFFER_SIZE])
        length = draw.maybe(len(content[2]) if content else draw.below(NET_BUFFER_SIZE + 1), lambda: draw.uint(2))
        return address, length, draw.field(0, 1), content

    def _consume(self, draw: Draw) -> Callable[[], None]:
        """Take entries off a queue's head (remembering what they name), or move the head past its tail."""
        q, count, overshoot = draw.pick(self.queues), draw.uint(2), draw.chance(16)

        def act() -> None:
            head, tail = q.load(HEAD), q.load(TAIL)
            n = count if overshoot else min(count % (q.info.capacity + 1), (tail - head) & 0xFFFF)
            self.taken.extend(q.address(head + i) for i in range(min(n, q.info.capacity)))
            q.store(HEAD, head + n)
        return act

    def _header(self, draw: Draw) -> Callable[[], None]:
        """Store anything into a queue's tail, head or signal flag."""
        q, field = draw.pick(self.queues), draw.pick((FLAG, TAIL, HEAD))
        value = draw.maybe(draw.pick((0, 1)), lambda: draw.uint(4 if field == FLAG else 2), 2)
        return lambda: q.store(field, value)

    def _write(self, draw: Draw) -> Callable[[], None]:
        """Write bytes anywhere in a region the hostile side may write."""
        view = self.regions[draw.pick(sorted(self.regions))]
        at = draw.uint(4) % len(view)
        data = draw.take(draw.below(MAX_WRITE + 1))[:len(view) - at]

        def act() -> None:
            view[at:at + len(data)] = data
        return act

    def _notify(self, draw: Draw) -> Callable[[], None]:
        """A hostile peer notifies the victim; the system then settles (or takes one step)."""
        peer, peer_ch = draw.pick(self.notifiers)
        settle = not draw.chance(4)

        def act() -> None:
            self._send(peer, peer_ch)
            self.settle() if settle else self._step()
        return act

    def _call(self, draw: Draw) -> Callable[[], None]:
        """A hostile peer makes a PPC into the victim with a drawn message (decoded as the callee does)."""
        victim_ch = draw.pick(self.calls)
        page = memoryview(ppc_message(draw).ljust(PAGE_SIZE, b"\0"))

        def act() -> None:
            try:
                label, registers = read_message(page, 0, "fuzzed call")
            except MalformedCall:
                return  # answered PPC_MALFORMED by the loop, never seen by the component
            reply = self._guarded(lambda: self.bench.component(self.victim).answer_call(victim_ch, label, registers))
            if reply is not None:
                out_label, out_mrs = reply
                try:
                    write_message(memoryview(bytearray(PAGE_SIZE)), 0, out_label, out_mrs, f"{self.victim} channel {victim_ch}")
                except ValueError as exc:
                    raise Finding(f"{self.victim}'s answer to label {label} cannot be sent: {exc}") from None
            self.settle()
        return act

    def _frame(self, draw: Draw) -> Callable[[], None]:
        """A frame from the outside world arrives at the TAP (at most MAX_FRAMES per input)."""
        data = frame(draw, self.hosts, self.peer)

        tap = self.tap
        assert tap is not None  # the operation is offered only with a TAP

        def act() -> None:
            if self.frames_left > 0:
                self.frames_left -= 1
                tap.send(data)
                self.settle()
                self.drain_tap()
        return act

    def _restart(self, draw: Draw) -> Callable[[], None]:
        """The victim restarts (``sddf restart``, or the monitor after a fault) on the queues as the
        hostile side left them."""
        def act() -> None:
            self._guarded(lambda: self.bench.restart(self.victim))
            self.settle()
        return act

    # ---- running ------------------------------------------------------------------------
    def _send(self, peer: str, ch: int) -> None:
        self.bench.component(peer)._sends[ch]()

    def settle(self) -> None:
        for _ in range(MAX_STEPS):
            if not self._step():
                return
        raise Finding(f"the system did not settle in {MAX_STEPS} steps (a notification loop)")

    def _step(self) -> int:
        return self._guarded(self.bench.step) or 0

    def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run PD code: a documented refusal faults the PD (None), anything else escapes."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - sorted into refusals and findings here
            self._fault(exc)
            return None

    def _fault(self, exc: Exception) -> None:
        """A PD raised: unless it is a documented refusal, that is a finding; else the PD is
        killed and restarted, as the monitor would, at most MAX_RESTARTS times per input."""
        pd = culprit(exc)
        if pd is None or not documented(exc, pd):
            if pd is not None:
                exc.add_note(f"sddf fuzz: raised in PD {pd.name!r}")
            raise exc
        name = pd.name  # a killed component is emptied
        self.faults[name] += 1
        if name in self.bench.components:
            self.bench.kill(name)
        if self.faults[name] <= MAX_RESTARTS:
            self._guarded(lambda: self.bench.restart(name))

    def drain_tap(self) -> list[bytes]:
        """What the system transmitted to the outside world since the last look (ARP requests for
        the outside world's address are answered, as a host on the link would)."""
        out = []
        while self.tap is not None:
            try:
                out.append(self.tap.recv(TAP_READ))
            except BlockingIOError:
                break
            self.peer.learn(out[-1])
            if (answer := arp_answer(out[-1])) is not None:
                self.tap.send(answer)
        return out

    def host(self, pd: str) -> tuple[bytes, bytes]:
        """A net client's (MAC, IPv4 address)."""
        config = self.bench.sdf.pd(pd).config
        return bytes(config["mac"]), socket.inet_aton(config["ip"])

    # ---- invariants ---------------------------------------------------------------------
    def check(self) -> None:
        problems = self._audit() + self._indices() + self._growth()
        if problems:
            raise Finding(f"after this input ({self.victim} fuzzed, {sorted(self.hostile)} hostile): "
                          + "; ".join(problems))
        for alive in self.liveness:
            alive(self)

    def _audit(self) -> list[str]:
        """Buffer conservation (sddf.net.audit) over what honest PDs hold: a pool that a hostile
        PD's queues carry may have buffers missing (the hostile side keeps them), never doubled
        or foreign; any other pool must be exactly conserved."""
        audit, forged = audit_honest(self.bench, self.hostile)
        return [f"pool {r.name}: {p}" for r in audit.pools.values() for p in pool_problems(r, r.name in forged)]

    def _indices(self) -> list[str]:
        """No honest queue holds more than its capacity, nor does any queue end of the victim."""
        problems = []
        for q in self.bench.sdf.queues:
            if q.kind == "net" and q.region not in self.hostile_regions:
                view = self.bench.monitor.regions[q.region].view
                tail, head = struct.unpack_from("<HH", view, q.offset)
                if (tail - head) & 0xFFFF > q.capacity:
                    problems.append(f"queue {q.label}: tail {tail}, head {head}, capacity {q.capacity}")
        victim = self.bench.components.get(self.victim)
        for path, end in walk(victim) if victim is not None else ():
            if isinstance(end, RingEnd) and end._used(end._peer) > end.capacity:
                problems.append(f"{self.victim}{path} ({end.name}): {end._used(end._peer)} entries, "
                                f"capacity {end.capacity}")
        return problems

    def _growth(self) -> list[str]:
        """The victim's private containers did not grow with the input (beyond its queues' capacity)."""
        victim = self.bench.components.get(self.victim)
        if victim is None:
            return []
        return [f"{self.victim}{path} grew from {self.baseline.get(path, 0)} to {size} entries"
                for path, size in container_sizes(victim).items()
                if size - self.baseline.get(path, 0) > self.growth_limit]


# ---- helpers --------------------------------------------------------------------------------
def hostile_peers(sdf: SystemDescription, victim: str) -> list[str]:
    """Every PD that may write a region ``victim`` maps, or call it."""
    mapped = {m.region.name for m in sdf.pd(victim).maps}
    writers = {pd.name for pd in sdf.pds for m in pd.maps if m.region.name in mapped and m.perms == "rw"}
    callers = {ch.pd_b.name if ch.pd_a.name == victim else ch.pd_a.name for ch in sdf.channels
               if (ch.pd_a.name == victim and ch.pp_b) or (ch.pd_b.name == victim and ch.pp_a)}
    return sorted((writers | callers) - {victim})


def _hostile_views(bench: Bench, hostile: set[str], mapped: set[str]) -> dict[str, memoryview]:
    """Each region of ``mapped`` that a hostile PD maps writable, by region name, through that PD's
    own mapping (the fuzzer writes what it could; the monitor's mappings stay free to close)."""
    views: dict[str, memoryview] = {}
    for pd in bench.sdf.pds:
        if pd.name in hostile:
            for m in pd.maps:
                if m.region.name in mapped and m.perms == "rw":
                    views.setdefault(m.region.name, bench.component(pd.name).regions[m.local_name])
    return views


def _tap(bench: Bench, hostile: set[str]) -> socket.socket | None:
    """The outside world's side of an honest TAP driver, if the system has one."""
    for irq in bench.sdf.irqs:
        if irq.source.startswith("tap:") and irq.pd.name not in hostile:
            return bench.frames(irq.pd.name)
    return None


def _hosts(sdf: SystemDescription, victim: str) -> list[tuple[bytes, bytes]]:
    """(MAC, IPv4) for frames to be addressed to: the victim's if it is a net client, else every
    net client's."""
    hosts = {pd.name: (bytes(pd.config["mac"]), socket.inet_aton(pd.config["ip"])) for pd in sdf.pds
             if isinstance(pd.config.get("mac"), bytes) and isinstance(pd.config.get("ip"), str)}
    if victim in hosts:
        return [hosts[victim]]
    return list(hosts.values()) or [(bytes.fromhex("020000000002"), bytes([10, 0, 0, 2]))]
