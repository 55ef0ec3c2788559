"""Each queue kind against a plain Python model (a deque and a capacity), with hypothesis state machines.

Both ends live in this process over one anonymous mmap. Every run starts its indices within
three capacities of the point where the free-running index wraps to 0, so a run that moves a
few queuefuls through crosses it.
After every step the test reads the header and slots itself (with ``struct``) and compares
them with the model.
"""
from __future__ import annotations

from collections import deque
from itertools import chain
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from queue_fixtures import (CAPACITIES, KIND_IDS, KINDS, EntryKind, QueueKind, QueueMemory, capacities, near_wrap,
                            uint)
from sddf.queue.ring import RingEnd

pytestmark = pytest.mark.timeout(60)

ENDS = st.sampled_from(["producer", "consumer"])
MAX_COUNTS = st.none() | st.integers(0, 2 * max(CAPACITIES))


class Model:
    """What the queue should hold: items in FIFO order, free-running indices, flag word, plug."""

    def __init__(self, capacity: int, modulus: int, start: int, flag: int, plugged: bool) -> None:
        self.items: deque[Any] = deque()
        self.capacity = capacity
        self.modulus = modulus
        self.tail = self.head = start
        self.flag = flag
        self.plugged = plugged

    def push(self, items: list[Any]) -> int:
        """Append as many of ``items`` as fit; return how many."""
        count = min(len(items), self.capacity - len(self.items))
        self.items.extend(items[:count])
        self.tail = (self.tail + count) % self.modulus
        return count

    def pop(self, max_count: int | None) -> list[Any]:
        count = len(self.items) if max_count is None else min(max_count, len(self.items))
        self.head = (self.head + count) % self.modulus
        return [self.items.popleft() for _ in range(count)]


def machine_for(kind: QueueKind) -> type[RuleBasedStateMachine]:
    """A state machine driving one queue of ``kind`` and its model."""

    class QueueMachine(RuleBasedStateMachine):
        @initialize(data=st.data(), flag=st.sampled_from([0, 1]) | uint(32), plugged=st.booleans())
        def attach(self, data: st.DataObject, flag: int, plugged: bool) -> None:
            """Write the starting indices (and flag/plug) into fresh memory, then attach both ends."""
            capacity = data.draw(capacities(kind), label="capacity")
            start = data.draw(near_wrap(kind, capacity), label="start")
            self.mem = kind.memory(capacity, start)
            if kind.flag_offset is not None:
                self.mem.set_u32(kind.flag_offset, flag)
            if kind.plugged_offset is not None:
                self.mem.header[kind.plugged_offset] = plugged
            self.ends: dict[str, RingEnd] = {"producer": self.mem.producer(),
                                             "consumer": self.mem.consumer()}
            self.model = Model(capacity, kind.modulus, start, flag, plugged)

        @property
        def producer(self) -> Any:
            return self.ends["producer"]

        @property
        def consumer(self) -> Any:
            return self.ends["consumer"]

        @rule(item=kind.item)
        def enqueue(self, item: Any) -> None:
            assert kind.put(self.producer, item) == (self.model.push([item]) == 1)

        def draw_batch(self, data: st.DataObject) -> list[Any]:
            """Up to two queuefuls of items: often more than there is room for."""
            return data.draw(st.lists(kind.item, max_size=2 * self.model.capacity + 1), label="batch")

        @rule(data=st.data())
        def enqueue_many(self, data: st.DataObject) -> None:
            batch = self.draw_batch(data)
            assert kind.put_many(self.producer, batch) == self.model.push(batch)

        @rule()
        def dequeue(self) -> None:
            expected = self.model.pop(1)
            assert kind.take(self.consumer) == (expected[0] if expected else None)

        @rule(max_count=MAX_COUNTS)
        def dequeue_many(self, max_count: int | None) -> None:
            assert kind.take_many(self.consumer, max_count) == self.model.pop(max_count)

        @rule(end=ENDS)
        def queries(self, end: str) -> None:
            queue, used, capacity = self.ends[end], len(self.model.items), self.model.capacity
            assert queue.capacity == capacity
            assert queue.empty() == (used == 0)
            assert queue.full() == (used == capacity)
            assert queue.free_slots() == capacity - used

        @invariant()
        def lengths_match(self) -> None:
            assert [e.length() for e in self.ends.values()] == [len(self.model.items)] * 2

        @invariant()
        def header_matches(self) -> None:
            """The indices in memory and each end's own index are the model's."""
            assert (self.mem.tail, self.mem.head) == (self.model.tail, self.model.head)
            assert (self.producer.index, self.consumer.index) == (self.model.tail, self.model.head)

        @invariant()
        def contents_match(self) -> None:
            """The slots from head to tail hold the model's items, in order."""
            stored = [self.mem.item_at(self.model.head + i) for i in range(len(self.model.items))]
            assert stored == list(self.model.items)

        if isinstance(kind, EntryKind):
            @rule(data=st.data())
            def enqueue_flat(self, data: st.DataObject) -> None:
                batch = self.draw_batch(data)
                assert self.producer.enqueue_flat(tuple(chain.from_iterable(batch))) == self.model.push(batch)

            @rule(max_count=MAX_COUNTS)
            def dequeue_flat(self, max_count: int | None) -> None:
                expected = tuple(chain.from_iterable(self.model.pop(max_count)))
                assert self.consumer.dequeue_flat(max_count) == expected

        if kind.flag_offset is None:
            @rule(end=ENDS)
            def no_protocol(self, end: str) -> None:
                for call in (self.ends[end].request_signal, self.ends[end].signal_needed,
                             self.ends[end].signal_requested):
                    with pytest.raises(TypeError):
                        call()
        else:
            @rule()
            def request_signal(self) -> None:
                self.ends[kind.flag_waiter].request_signal()
                self.model.flag = 0

            @rule()
            def cancel_signal(self) -> None:
                self.ends[kind.flag_waiter].cancel_signal()
                self.model.flag = 1

            @rule()
            def request_and_recheck(self) -> None:
                """Request, re-check: work (entries for a consumer, room for a producer) cancels it."""
                used = len(self.model.items)
                work = used > 0 if kind.flag_waiter == "consumer" else used < self.model.capacity
                assert self.ends[kind.flag_waiter].request_and_recheck() == work
                self.model.flag = 1 if work else 0

            @rule()
            def signal_needed(self) -> None:
                """A requested signal is claimed (and cancelled) once."""
                signaller = "producer" if kind.flag_waiter == "consumer" else "consumer"
                requested = self.model.flag == 0
                assert bool(self.ends[signaller].signal_needed()) == requested
                if requested:
                    self.model.flag = 1

            @invariant()
            def flag_matches(self) -> None:
                """Both ends see the flag word in memory; 0 (and only 0) means a signal is required."""
                assert self.mem.u32(kind.flag_offset) == self.model.flag
                required = self.model.flag == 0
                assert [e.signal_requested() for e in self.ends.values()] == [required] * 2

        if kind.plugged_offset is not None:
            @rule()
            def plug(self) -> None:
                self.producer.plug()
                self.model.plugged = True

            @rule()
            def unplug(self) -> None:
                self.producer.unplug()
                self.model.plugged = False

            @invariant()
            def plug_matches(self) -> None:
                assert self.mem.header[kind.plugged_offset] == self.model.plugged
                assert self.consumer.plugged() == self.model.plugged

    QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
    return QueueMachine


NetMachine, BlkRequestMachine, BlkResponseMachine, SerialMachine = (machine_for(kind) for kind in KINDS)
TestNetQueue = NetMachine.TestCase
TestBlkRequestQueue = BlkRequestMachine.TestCase
TestBlkResponseQueue = BlkResponseMachine.TestCase
TestSerialQueue = SerialMachine.TestCase


def bad_capacities(kind: QueueKind) -> st.SearchStrategy[int]:
    """Capacities an end must refuse: zero, more than its indices can count, and (16-bit
    indices) any that is not a power of two."""
    refused = st.just(0) | st.just(kind.modulus) | st.just(kind.modulus // 2 + 1)
    if kind.modulus > 1 << 16:
        return refused
    return refused | st.integers(0, 1000).filter(lambda c: c & (c - 1) != 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["producer", "consumer"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_a_capacity_the_indices_cannot_serve_is_refused(kind: QueueKind, end: str, data: st.DataObject) -> None:
    """Attaching with a capacity of 0, one too big for the indices, or (16-bit indices) one that is
    not a power of two raises ValueError naming the queue. The memory has room for up to 1000
    slots, so small bad capacities cannot be refused for want of memory; the match checks that it
    is the capacity check that refused the rest."""
    capacity = data.draw(bad_capacities(kind), label="capacity")
    mem = QueueMemory(kind, capacity, room=min(max(capacity, 1), 1000))
    attach = mem.producer if end == "producer" else mem.consumer
    with pytest.raises(ValueError, match=r"capacity \d+ must be") as err:
        attach()
    assert repr(kind.name) in str(err.value)
