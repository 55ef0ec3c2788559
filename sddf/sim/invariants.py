"""What must hold after every step of a simulation, and when it quiesces.

After every step (on memory as each PD's program order has it, see ``Memory.applied``):
  - no queue holds more entries than its capacity;
  - every net buffer is in exactly one queue or one owner (:class:`Conservation`: every net queue
    that names its pools, and the virtualisers' ledger words, as ``sddf audit`` reads them).
As it happens (reported by the models, :class:`Queues`):
  - FIFO: what a consumer takes from a queue is what its producer put there, in order;
  - no queue end refuses its peer's index or descriptors (correct components never give cause).
When the system quiesces (``lost_wakeups``): no net queue holds entries while its consumer waits for
a signal it requested (the flag is 0 because the consumer stored it) — a lost wake-up. When it is
idle as well (no timer armed, no PD stalled: ``idle_work``), no queue of work holds entries.
"""
from __future__ import annotations

import struct
from typing import Any

from sddf.blk import queue as blk
from sddf.ledger import committed_words
from sddf.net import queue as net
from sddf.net.audit import Audit
from sddf.net.queue import NET_BUFFER_SIZE
from sddf.net.words import RX_PENDING, TX_RETURNING
from sddf.serial import queue as serial
from sddf.system import SystemDescription

Key = tuple[str, int]  # a queue: its region's name and its header's offset there
LAYOUTS = {"net": net.LAYOUT, "blk.req": blk.LAYOUT, "blk.resp": blk.LAYOUT, "serial": serial.LAYOUT}


class Queues:
    """Per queue, what its producer put at each index, and whether its consumer's request for a
    signal stands."""

    def __init__(self) -> None:
        self.log: dict[Key, dict[int, bytes]] = {}
        self.requested: dict[Key, bool] = {}

    def put(self, key: Key, index: int, data: bytes, size: int, mask: int) -> None:
        log = self.log.setdefault(key, {})
        for i in range(len(data) // size):
            log[(index + i) & mask] = data[i * size:(i + 1) * size]

    def took(self, key: Key, index: int, data: bytes, size: int, mask: int) -> str | None:
        """What is wrong with the entries a consumer took (None: they are what was put, in order)."""
        log = self.log.get(key, {})
        for i in range(len(data) // size):
            at = (index + i) & mask
            entry = data[i * size:(i + 1) * size]
            if log.get(at) != entry:
                what = "nothing was put there" if at not in log else f"the producer put {log[at].hex()}"
                return (f"queue {describe(key)}: the consumer took {entry.hex()} at index {at}, "
                        f"but {what} (FIFO order broken)")
        return None

    def flag(self, key: Key, value: int) -> None:
        self.requested[key] = value == 0


def describe(key: Key) -> str:
    """A queue's name: its region (and offset, unless 0)."""
    return key[0] if not key[1] else f"{key[0]}+{key[1]:#x}"


def index_problems(sdf: SystemDescription, regions: dict[str, Any]) -> list[str]:
    """Every queue whose producer's index is ahead of its consumer's by more than the capacity."""
    problems = []
    for q in sdf.queues:
        layout = LAYOUTS[q.kind]
        fmt = "<H" if layout.index_bits == 16 else "<I"
        view = regions[q.region].view
        tail, head = (struct.unpack_from(fmt, view, q.offset + at)[0]
                      for at in (layout.tail_offset, layout.head_offset))
        used = (tail - head) & ((1 << layout.index_bits) - 1)
        if used > q.capacity:
            problems.append(f"queue {q.label}: tail {tail} is {used} ahead of head {head}, capacity {q.capacity}")
    return problems


class Conservation:
    """Is every net buffer in exactly one queue or owner? A quick exact count decides when all is well
    (every step); otherwise :class:`sddf.net.audit.Audit`, as ``sddf audit`` reads the same memory,
    decides and says what is wrong."""

    def __init__(self, sdf: SystemDescription, regions: dict[str, Any], ledgers: dict[str, Any]) -> None:
        self.queues = [(q, regions[q.region].view[q.offset:]) for q in sdf.queues if q.kind == "net" and q.pools]
        words = {pd.name: pd.ledger_words for pd in sdf.pds}
        self.ledgers = [(info, ledgers[info.pd].view, words[info.pd]) for info in sdf.ledgers]
        self.pools = {name: size for q in sdf.queues for name, _base, size in q.pools}
        self.pools.update({name: size for info in sdf.ledgers for name, _base, size in info.pools})
        #: each pool's buffers, as offsets in the pool, in order
        self.buffers = {name: list(range(0, size // NET_BUFFER_SIZE * NET_BUFFER_SIZE, NET_BUFFER_SIZE))
                        for name, size in self.pools.items()}
        self._cache: dict[int, tuple[bytes, list[tuple[str, list[int]]]]] = {}

    def problems(self) -> list[str]:
        if self._exact():
            return []
        audit = Audit()
        for q, view in self.queues:
            audit.add_queue(view, q.capacity, q.pools)
        for info, view, count in self.ledgers:
            words = committed_words(view, count)
            if info.kind == "net.virt_rx":
                audit.add_virt_rx_words(words, info.pools[0])
            elif info.kind == "net.virt_tx":
                audit.add_virt_tx_words(words, info.pools)
        return ["buffers lost or duplicated: " + p for p in audit.problems()]

    def close(self) -> None:
        """Let go of the queues' memory (before its regions are closed)."""
        for _q, view in self.queues:
            view.release()

    def _exact(self) -> bool:
        """Each buffer seen exactly once (a broadcast one once per client holding it), and nothing
        else seen."""
        seen: dict[str, list[int]] = {name: [] for name in self.pools}
        for i, (q, view) in enumerate(self.queues):
            mine = self._in_queue(i, q, view)
            if mine is None:
                return False
            for name, offsets in mine:
                seen[name] += offsets
        more: dict[str, list[int]] = {}  # a broadcast buffer's places beyond one (one per client holding it)
        for info, view, count in self.ledgers:
            words = committed_words(view, count)
            if info.kind == "net.virt_rx" and any(words):
                name = info.pools[0][0]
                held = [(i * NET_BUFFER_SIZE, w) for i, w in enumerate(words) if w]
                seen[name] += [off for off, w in held if w & RX_PENDING]
                more[name] = [off for off, w in held if not w & RX_PENDING for _ in range(w.bit_count() - 1)]
            elif info.kind == "net.virt_tx":
                first = 0
                for name, _base, size in info.pools:
                    mine = words[first:first + size // NET_BUFFER_SIZE]
                    if TX_RETURNING in mine:
                        seen[name] += [i * NET_BUFFER_SIZE for i, w in enumerate(mine) if w == TX_RETURNING]
                    first += len(mine)
        # as sorted lists: queues hold runs in order, which sort fast (and sets of multiples of a
        # power of two hash badly)
        return all(sorted(offsets) == (sorted(self.buffers[name] + more[name]) if name in more else self.buffers[name])
                   for name, offsets in seen.items())

    def _in_queue(self, i: int, q: Any, view: memoryview) -> list[tuple[str, list[int]]] | None:
        """Queue ``i``'s addresses by pool, as offsets in the pool (None: one is in none of them);
        remembered while its indices stay put (what lies between them cannot change: the FIFO and
        index checks see to that)."""
        indices = view[:4].tobytes()
        cached = self._cache.get(i)
        if cached is not None and cached[0] == indices:
            return cached[1]
        addresses = _queued(view, q.capacity)
        out, counted = [], 0
        for name, base, size in q.pools:
            mine = ([a - base for a in addresses if base <= a < base + size] if len(q.pools) > 1
                    else [a - base for a in addresses])
            out.append((name, mine))
            counted += len(mine)
        if counted != len(addresses):
            return None
        self._cache[i] = (indices, out)
        return out


def _queued(view: memoryview, capacity: int) -> list[int]:
    """The io_or_offset of each descriptor between head and tail (``sddf.net.audit.queued``, faster)."""
    tail, head = struct.unpack_from("<HH", view, 0)
    count = min((tail - head) & 0xFFFF, capacity)
    addresses = view[net.HEADER_SIZE:net.HEADER_SIZE + net.DESC_SIZE * capacity].cast("Q")[::2]
    first = head % capacity
    return addresses[first:first + count].tolist() + addresses[:max(0, first + count - capacity)].tolist()


def lost_wakeups(sdf: SystemDescription, regions: dict[str, Any], queues: Queues) -> list[str]:
    """Net queues holding entries whose consumer asked to be signalled (and nobody will)."""
    problems = []
    for q in sdf.queues:
        if q.kind != "net" or not queues.requested.get((q.region, q.offset)):
            continue
        view = regions[q.region].view
        tail, head = struct.unpack_from("<HH", view, q.offset)
        flag = struct.unpack_from("<I", view, q.offset + net.LAYOUT.flag_offset)[0]
        if flag == 0 and tail != head:
            problems.append(f"lost wake-up: queue {q.label} holds {(tail - head) & 0xFFFF} entries, its "
                            "consumer requested a signal and the system is quiescent")
    return problems


def idle_work(sdf: SystemDescription, regions: dict[str, Any]) -> list[str]:
    """Net queues named "active" (the queues of work, as sdfgen names them) still holding entries
    when the system is idle: their consumer stopped without asking to be woken."""
    problems = []
    for q in sdf.queues:
        if q.kind == "net" and "active" in q.label:
            tail, head = struct.unpack_from("<HH", regions[q.region].view, q.offset)
            if tail != head:
                problems.append(f"queue {q.label} holds {(tail - head) & 0xFFFF} entries of work "
                                "and the system is idle")
    return problems
