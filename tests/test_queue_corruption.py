"""A queue end faced with a corrupt peer: it raises QueueProtocolError naming the queue and changes nothing.

The test plays the peer by writing the peer's index or entries into memory directly, then
checks that the reading end refuses, writes nothing, and carries on as before once the
corruption is undone (same length, same entries, its own index untouched).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_fixtures import (BLK_REQ, BLK_RESP, CAPACITIES, KIND_IDS, KINDS, QueueKind, QueueMemory,
                            near_wrap, uint)
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, request_validator
from sddf.queue.entries import Validator
from sddf.queue.ring import QueueProtocolError, RingEnd

pytestmark = pytest.mark.timeout(60)
EXAMPLES = settings(max_examples=100, deadline=None)
READERS = ["consumer", "producer"]


@dataclass(frozen=True)
class Op:
    """Something an end does that reads the peer's index; ``item`` is used only by producers."""

    name: str
    run: Callable[[QueueKind, Any, Any], object]

    def __repr__(self) -> str:
        return self.name


QUERIES = [Op("length", lambda k, end, item: end.length()),
           Op("empty", lambda k, end, item: end.empty()),
           Op("full", lambda k, end, item: end.full()),
           Op("free_slots", lambda k, end, item: end.free_slots())]
TAKE = Op("take", lambda k, end, item: k.take(end))
TAKE_MANY = Op("take_many", lambda k, end, item: k.take_many(end))
OPS = {"consumer": QUERIES + [TAKE, TAKE_MANY],
       "producer": QUERIES + [Op("put", lambda k, end, item: k.put(end, item)),
                              Op("put_many", lambda k, end, item: k.put_many(end, [item, item]))]}


@dataclass
class Queue:
    """A queue attached at both ends and holding ``items``, which the producer put there."""

    mem: QueueMemory
    ends: dict[str, RingEnd]
    items: list[Any]

    @property
    def kind(self) -> QueueKind:
        return self.mem.kind


def attached(kind: QueueKind, capacity: int, start: int, validate: Validator | None = None) -> Queue:
    mem = kind.memory(capacity, start)
    return Queue(mem, {"producer": mem.producer(), "consumer": mem.consumer(validate)}, [])


def filled_queue(kind: QueueKind, data: st.DataObject) -> Queue:
    """A queue starting near the index wrap, holding a few items both ends have seen."""
    capacity = data.draw(st.sampled_from(CAPACITIES), label="capacity")
    queue = attached(kind, capacity, data.draw(near_wrap(kind, capacity), label="start"))
    queue.items = data.draw(st.lists(kind.item, max_size=capacity), label="items")
    assert kind.put_many(queue.ends["producer"], queue.items) == len(queue.items)
    assert [end.length() for end in queue.ends.values()] == [len(queue.items)] * 2
    return queue


def assert_refused(queue: Queue, reader: str, op: Op, item: Any = None) -> QueueProtocolError:
    """``op`` by ``reader`` raises QueueProtocolError naming the queue, and writes nothing."""
    end = queue.ends[reader]
    before, own = queue.mem.snapshot(), end.index
    with pytest.raises(QueueProtocolError) as err:
        op.run(queue.kind, end, item)
    assert err.value.queue == queue.kind.name
    assert repr(queue.kind.name) in str(err.value)
    assert queue.mem.snapshot() == before
    assert end.index == own
    return err.value


def assert_works(queue: Queue, data: st.DataObject, items: st.SearchStrategy[Any] | None = None) -> None:
    """The queue still holds its items, fills to capacity with more ``items`` (default: any of
    its kind), and gives everything back in order."""
    kind, producer, consumer = queue.kind, queue.ends["producer"], queue.ends["consumer"]
    assert producer.length() == consumer.length() == len(queue.items)
    room = queue.mem.capacity - len(queue.items)
    items = kind.item if items is None else items
    more = data.draw(st.lists(items, min_size=room + 1, max_size=room + 1), label="more")
    assert kind.put_many(producer, more) == room
    assert kind.take_many(consumer) == queue.items + more[:room]
    assert producer.empty() and consumer.empty()


def legal_move(queue: Queue, reader: str) -> int:
    """How far the peer's index may move forward: a tail up to full, a head up to the tail."""
    used = len(queue.items)
    return queue.mem.capacity - used if reader == "consumer" else used


def peer_field(reader: str) -> str:
    return "tail" if reader == "consumer" else "head"


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@given(data=st.data())
@EXAMPLES
def test_peer_index_jump_is_refused(kind: QueueKind, reader: str, data: st.DataObject) -> None:
    """The peer's index moved backwards, or forward past what it may (tail beyond capacity - used,
    head beyond the tail): every read of it is refused until it is put back."""
    queue = filled_queue(kind, data)
    half, room = kind.modulus // 2, legal_move(queue, reader)
    jumps = st.sampled_from([-1, room + 1]) | st.integers(-half, -1) | st.integers(room + 1, half)
    jump = data.draw(jumps, label="jump")
    ops = data.draw(st.lists(st.sampled_from(OPS[reader]), min_size=1, max_size=3), label="ops")
    field = peer_field(reader)
    good = getattr(queue.mem, field)
    setattr(queue.mem, field, good + jump)
    for op in ops:
        error = assert_refused(queue, reader, op, data.draw(kind.item, label="item"))
        bad_value = (good + jump) % kind.modulus
        assert re.search(rf"\b{field}\b.*\b{bad_value}\b", str(error))
    setattr(queue.mem, field, good)
    assert_works(queue, data)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@given(data=st.data())
@EXAMPLES
def test_peer_index_moves_within_bounds_are_accepted(kind: QueueKind, reader: str,
                                                     data: st.DataObject) -> None:
    """The boundary of the check above: a tail may reach full, a head may reach the tail."""
    queue = filled_queue(kind, data)
    move = data.draw(st.integers(0, legal_move(queue, reader)), label="move")
    field = peer_field(reader)
    setattr(queue.mem, field, getattr(queue.mem, field) + move)
    expected = len(queue.items) + (move if reader == "consumer" else -move)
    assert queue.ends[reader].length() == expected
    assert queue.ends[reader].free_slots() == queue.mem.capacity - expected


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_attach_refuses_indices_further_apart_than_capacity(kind: QueueKind, data: st.DataObject) -> None:
    capacity = data.draw(st.sampled_from(CAPACITIES), label="capacity")
    mem = kind.memory(capacity, data.draw(near_wrap(kind, capacity), label="head"))
    mem.tail = mem.head + data.draw(st.integers(capacity + 1, kind.modulus - 1), label="gap")
    for attach in (mem.producer, mem.consumer):
        with pytest.raises(QueueProtocolError) as err:
            attach()
        assert err.value.queue == kind.name


# ---- entries the consumer's validator must refuse --------------------------------------------

@dataclass(frozen=True)
class Validation:
    """A consumer's validator (None: the kind's built-in check) with entries it accepts and refuses."""

    validate: Validator | None
    good: st.SearchStrategy[tuple]
    bad: st.SearchStrategy[tuple]


@st.composite
def request_validations(draw: st.DrawFn) -> Validation:
    """Requests must have a known code; reads and writes must keep their data inside the region."""
    base = draw(st.integers(1, 1 << 40))
    end = base + draw(st.integers(BLK_TRANSFER_SIZE, 64 * BLK_TRANSFER_SIZE))
    transfers = st.sampled_from([int(BlkReqCode.READ), int(BlkReqCode.WRITE)])
    others = st.sampled_from([int(BlkReqCode.FLUSH), int(BlkReqCode.BARRIER)])

    def request(codes: st.SearchStrategy[int], offsets: st.SearchStrategy[int],
                count: st.SearchStrategy[int]) -> st.SearchStrategy[tuple]:
        return st.tuples(codes, offsets, uint(64), count, uint(32))

    def inside(count: int) -> st.SearchStrategy[tuple]:
        return request(transfers, st.integers(base, end - count * BLK_TRANSFER_SIZE), st.just(count))

    def past_end(count: int) -> st.SearchStrategy[tuple]:
        first = max(base, end - count * BLK_TRANSFER_SIZE + 1)
        return request(transfers, st.integers(first, (1 << 64) - 1), st.just(count))

    return Validation(
        request_validator(base, end - base),
        good=st.integers(0, (end - base) // BLK_TRANSFER_SIZE).flatmap(inside)
        | request(others, uint(64), uint(16)),  # a flush or barrier moves no data: any offset
        bad=st.one_of(request(st.integers(len(BlkReqCode), (1 << 32) - 1), uint(64), uint(16)),
                      request(transfers, st.integers(0, base - 1), uint(16)),
                      uint(16).flatmap(past_end)))


def response_validations() -> st.SearchStrategy[Validation]:
    """Responses must have a known status (the response consumer always checks)."""
    bad = st.tuples(st.integers(len(BlkRespStatus), (1 << 32) - 1), uint(16), uint(32))
    return st.just(Validation(None, BLK_RESP.item, bad))


@pytest.mark.parametrize("kind, validations", [(BLK_REQ, request_validations()), (BLK_RESP, response_validations())],
                         ids=["blk.req", "blk.resp"])
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_batch_with_one_bad_entry_is_refused_whole(kind: QueueKind,
                                                   validations: st.SearchStrategy[Validation],
                                                   data: st.DataObject) -> None:
    """A batch with one bad entry among good ones is refused as a whole, naming that entry's
    index (net descriptors are refused one by one instead: tests/test_net_queue_checks.py); the good entries before it still come out one by one, and once the peer rewrites
    the bad entry the rest comes out too."""
    check = data.draw(validations, label="validation")
    capacity = data.draw(st.sampled_from(CAPACITIES), label="capacity")
    start = data.draw(near_wrap(kind, capacity), label="start")
    before = data.draw(st.lists(check.good, max_size=capacity - 1), label="before")
    after = data.draw(st.lists(check.good, max_size=capacity - 1 - len(before)), label="after")
    bad, fix = data.draw(check.bad, label="bad"), data.draw(check.good, label="fix")
    queue = attached(kind, capacity, start, check.validate)
    queue.items = before + [bad] + after
    assert kind.put_many(queue.ends["producer"], queue.items) == len(queue.items)
    bad_index = (start + len(before)) % kind.modulus
    names_bad_entry = re.compile(rf"\bindex {bad_index}\b")

    assert names_bad_entry.search(str(assert_refused(queue, "consumer", TAKE_MANY)))
    assert queue.ends["consumer"].length() == len(queue.items)
    assert kind.take_many(queue.ends["consumer"], len(before)) == before
    assert names_bad_entry.search(str(assert_refused(queue, "consumer", TAKE)))
    queue.mem.put_item_at(bad_index, fix)
    queue.items = [fix] + after
    assert_works(queue, data, check.good)
