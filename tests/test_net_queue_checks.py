"""A net consuming end hands out only checked descriptors; the rest are consumed, counted, reported.

The producer side of each test writes descriptors with plain struct stores (as a buggy or
hostile C peer could), so nothing the library does on enqueue hides what the consumer must catch.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddf.net.queue import DESC_SIZE, HEADER_SIZE, NET_BUFFER_SIZE, BufferSpace, NetConsumer, NetProducer, \
    queue_size
from sddf.queue.ring import QueueProtocolError

CAPACITY = 64
SPANS = [(0x4000_0000, 8 * NET_BUFFER_SIZE), (0x4020_0000, 4 * NET_BUFFER_SIZE)]  # two regions, a gap


def raw_queue(descs: list[tuple[int, int, int]]) -> bytearray:
    """A net queue whose producer published ``descs`` (oid written as a whole byte)."""
    memory = bytearray(queue_size(CAPACITY))
    for i, (io, length, oid_byte) in enumerate(descs):
        struct.pack_into("<QHB", memory, HEADER_SIZE + DESC_SIZE * i, io, length, oid_byte)
    struct.pack_into("<H", memory, 0, len(descs))  # tail
    return memory


def good_desc() -> st.SearchStrategy[tuple[int, int, int]]:
    buffers = [base + i * NET_BUFFER_SIZE for base, size in SPANS for i in range(size // NET_BUFFER_SIZE)]
    return st.tuples(st.sampled_from(buffers), st.integers(0, NET_BUFFER_SIZE), st.integers(0, 63))


def bad_desc() -> st.SearchStrategy[tuple[int, int, int]]:
    base, size = SPANS[0]
    return st.one_of(
        st.tuples(st.integers(0, base - 1), st.just(60), st.just(0)),                        # below
        st.tuples(st.integers(base + size, SPANS[1][0] - 1), st.just(60), st.just(0)),       # in the gap
        st.tuples(st.integers(SPANS[1][0] + SPANS[1][1], 2**64 - 1), st.just(60), st.just(0)),  # above
        st.tuples(st.integers(1, NET_BUFFER_SIZE - 1).map(lambda d: base + d), st.just(60), st.just(0)),  # misaligned
        st.tuples(st.just(base), st.integers(NET_BUFFER_SIZE + 1, 0xFFFF), st.just(0)))       # too long


@given(st.lists(st.tuples(st.booleans(), good_desc(), bad_desc()), max_size=CAPACITY),
       st.integers(1, CAPACITY + 1), st.integers(0, 3))
@settings(max_examples=300, deadline=None)
def test_bad_descriptors_are_consumed_counted_and_never_handed_out(
        picks: list[tuple[bool, tuple, tuple]], batch: int, top_bits: int) -> None:
    """Good descriptors come out in order, oid masked to 6 bits whatever the byte's top bits
    held; each bad one is refused once, reported with what is wrong, and the queue ends empty."""
    written = [(good if keep else bad) for keep, good, bad in picks]
    with_top_bits = [(io, length, oid | top_bits << 6) for io, length, oid in written]
    reports: list[tuple[str, str]] = []
    end = NetConsumer("client0.tx.active", raw_queue(with_top_bits), CAPACITY, BufferSpace(SPANS),
                      lambda counter, message: reports.append((counter, message)))
    got = []
    while batch_got := end.dequeue_many(batch):
        got += batch_got
    while end.last_taken:  # a batch of nothing but refusals hands out nothing, yet consumes
        got += end.dequeue_many(batch)
    assert got == [good for keep, good, _ in picks if keep]
    refused = sum(1 for keep, _, _ in picks if not keep)
    assert end.refused == refused and len(reports) == refused
    assert all(counter == "client0.tx.active.refused" and "is not a 2048-byte buffer in" in message
               for counter, message in reports)
    assert end.empty()


def test_a_consumer_without_buffers_still_masks_the_oid() -> None:
    end = NetConsumer("q", raw_queue([(12345, 7, 0xC5)]), CAPACITY)
    assert end.dequeue_many() == [(12345, 7, 0x05)]


@pytest.mark.parametrize("oid", [64, 255])
def test_a_producer_refuses_an_oid_that_does_not_fit_six_bits(oid: int) -> None:
    memory = bytearray(queue_size(CAPACITY))
    producer = NetProducer("q", memory, CAPACITY)
    with pytest.raises(ValueError, match="does not fit"):
        producer.enqueue_many([(0, 1, 1), (NET_BUFFER_SIZE, 1, oid)])
    assert producer.index == 0 and memory == bytearray(queue_size(CAPACITY)), "nothing may be written"


def test_a_broken_index_raises_or_is_reported_and_the_queue_starts_afresh() -> None:
    """After attaching, a tail that jumps past the capacity raises; with ``on_refuse`` set it is
    reported once, and the end adopts it with the queue empty: what the producer publishes from
    there on comes through."""
    memory = raw_queue([])
    strict = NetConsumer("q", memory, CAPACITY)
    reports: list[str] = []
    lenient = NetConsumer("q", memory, CAPACITY, on_refuse=lambda counter, _message: reports.append(counter))
    struct.pack_into("<H", memory, 0, CAPACITY + 1)  # the producer's tail jumped past the capacity
    with pytest.raises(QueueProtocolError, match="jumped"):
        strict.empty()
    assert lenient.empty() and lenient.dequeue_many() == [] and not lenient.request_and_recheck()
    assert reports == ["q.protocol_errors"] and lenient.index == CAPACITY + 1
    producer = NetProducer("q", memory, CAPACITY)  # a restarted producer attaches to the new state
    assert producer.enqueue_many([(0, 7, 1)]) == 1
    assert lenient.dequeue_many() == [(0, 7, 1)]


def test_a_header_left_corrupt_does_not_stop_a_new_end_from_attaching() -> None:
    """Indices that contradict each other at attach raise, or (reported) reset the queue to empty."""
    memory = raw_queue([])
    struct.pack_into("<H", memory, 0, CAPACITY + 5)  # tail far past head
    with pytest.raises(QueueProtocolError, match="apart"):
        NetProducer("q", memory, CAPACITY)
    reports: list[str] = []
    producer = NetProducer("q", memory, CAPACITY, on_refuse=lambda counter, _message: reports.append(counter))
    assert reports == ["q.protocol_errors"] and producer.free_slots() == CAPACITY
    consumer = NetConsumer("q", memory, CAPACITY)
    assert producer.enqueue_many([(0, 1, 0)]) == 1 and consumer.dequeue_many() == [(0, 1, 0)]


def test_peeked_entries_stay_queued_until_released() -> None:
    memory = raw_queue([(i * NET_BUFFER_SIZE + SPANS[0][0], 0, 0) for i in range(5)])
    end = NetConsumer("q", memory, CAPACITY, BufferSpace(SPANS))
    assert len(end.peek_many(4)) == 4 and end.length() == 5, "a peek releases nothing"
    assert NetConsumer("q", memory, CAPACITY, BufferSpace(SPANS)).length() == 5, "a restart finds them all"
    end.release(3)
    assert end.length() == 2 and end.dequeue_many()[0][0] == 3 * NET_BUFFER_SIZE + SPANS[0][0]


def test_a_peek_that_meets_a_refused_entry_releases_it_all() -> None:
    base = SPANS[0][0]
    end = NetConsumer("q", raw_queue([(base, 0, 0), (3, 0, 0), (base + NET_BUFFER_SIZE, 0, 0)]), CAPACITY,
                      BufferSpace(SPANS), lambda _counter, _message: None)
    assert [io for io, _, _ in end.peek_many(8)] == [base, base + NET_BUFFER_SIZE]
    assert end.peek_released and end.refused == 1 and end.empty()
    end.release(0)  # already released: nothing more moves
    assert end.index == 3


def test_a_release_beyond_the_peeked_entries_is_refused() -> None:
    """Releasing more than the last peek handed out would move the head past the tail."""
    consumer = NetConsumer("q", raw_queue([(0, 1, 0), (NET_BUFFER_SIZE, 1, 0)]), CAPACITY)
    assert len(consumer.peek_many(1)) == 1
    with pytest.raises(ValueError, match="cannot release 2 entries: the last peek handed out 1"):
        consumer.release(2)
    consumer.release(1)
    assert consumer.dequeue_many() == [(NET_BUFFER_SIZE, 1, 0)]


def test_a_take_copies_at_most_a_queue_of_entries_whatever_its_own_index_says() -> None:
    """An own index past the tail (a misused end) makes the queue look over-full: the copy into
    the end's private staging buffer stops at its capacity instead of writing past it."""
    consumer = NetConsumer("q", raw_queue([(0, 1, 0)]), CAPACITY)
    consumer._ring.own = 2  # head past the tail (1): the queue looks 65535 entries long
    assert len(consumer.peek_many(10 * CAPACITY)) <= CAPACITY
