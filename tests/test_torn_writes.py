"""Torn index stores: a peer must never read an index value that its owner did not store.

CPython's ``struct.pack_into`` zero-fills its target before writing the value, so an index
stored that way is briefly 0 or half-written to a process reading it at that moment.
A writer process stores index values with no zero byte (0xFFFE/0xFFFF, 0xFFFFFFFE/0xFFFFFFFF)
while this process loads them: through a real producer (``RingEnd._advance``) no other value
may ever show up; through ``struct.pack_into`` (the control) torn values do. End to end, a
producer process and a consumer moving many descriptors through net queues must lose,
duplicate and misread none.

The child processes run this file as a script: ``python test_torn_writes.py ROLE JSON``.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict
from functools import partial
from typing import Any, Callable, Iterator, NamedTuple

import pytest

from helpers.regions import Resources, scoped_resources
from sddf import atomic
from sddf.blk import queue as blk
from sddf.net import queue as net
from sddf.blk.queue import ReqProducer
from sddf.net.queue import NET_BUFFER_SIZE, BufferSpace, NetConsumer, NetProducer, fill_free, queue_size
from sddf.queue.ring import RingEnd
from sddf.shm import Region, round_to_pages
from sddf.channel import ChannelEnd, ChannelEndFds, Waiter, channel_pair

# ---- shared: one region, child processes ------------------------------------------------------
CAPACITY = 1024  # net queue capacity end to end: all buffers fit in either queue, so neither side waits long
FREE_OFFSET, ACTIVE_OFFSET = 0, round_to_pages(queue_size(CAPACITY))
REGION_SIZE = 2 * ACTIVE_OFFSET


@pytest.fixture
def resources(request: pytest.FixtureRequest) -> Iterator[Resources]:
    with scoped_resources(request) as r:
        yield r


@pytest.fixture
def region(resources: Resources) -> Region:
    return resources.region("torn", REGION_SIZE)


def spawn(role: str, region: Region, fds: tuple[int, ...] = (), **params: Any) -> subprocess.Popen:
    """Run this file as a child in ``role``, sharing the region (and ``fds``) with it."""
    args = json.dumps({"region_fd": region.fd, **params})
    return subprocess.Popen([sys.executable, __file__, role, args], pass_fds=(region.fd, *fds),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(child: subprocess.Popen) -> str:
    """Kill the child if it still runs, reap it, and return what it wrote to stderr."""
    if child.poll() is None:
        child.kill()
    _, err = child.communicate(timeout=10)
    return err


# ---- flipping one index ---------------------------------------------------------------------
STOP_OFFSET = 2048  # a u32 the reader sets to stop the writer, away from the queue header
CHILD_LIMIT_S = 30.0  # a child left running by a dead parent gives up after this
WATCH_S = 1.5  # the reader watches for at most this long...
WATCH_CHANGES = 300_000  # ...or until it has seen the value change this often
MIN_OVERLAP = 1_000  # fewer changes than this: the writer and reader hardly ran at the same time


class Width(NamedTuple):
    producer: type[RingEnd]
    tail_offset: int
    fmt: str


WIDTHS = {16: Width(NetProducer, net.LAYOUT.tail_offset, "<H"),
          32: Width(ReqProducer, blk.LAYOUT.tail_offset, "<I")}


def flip_values(bits: int) -> tuple[int, int]:
    """Two index values with no zero byte: any zero byte the reader sees was never stored."""
    high = (1 << bits) - 1
    return high - 1, high


def flip(region: Region, bits: int, how: str) -> None:
    """Alternate the index between its two values, with a real producer or struct.pack_into."""
    width, (low, high) = WIDTHS[bits], flip_values(bits)
    store: Callable[[int], None]
    if how == "ring":
        # A producer's tail goes 0 -> low, then +1 and -1 (mod 2**bits), each through its index store.
        store, steps = width.producer("flip", region.view, 8)._advance, (low, 1, high)
    else:
        store, steps = partial(struct.pack_into, width.fmt, region.view, width.tail_offset), (low, high, low)
    store(steps[0])
    print("ready", flush=True)
    ptr, deadline = atomic.pointer(region.view), time.monotonic() + CHILD_LIMIT_S
    while not atomic.load_acquire_u32(ptr, STOP_OFFSET) and time.monotonic() < deadline:
        for _ in range(1024):
            store(steps[1])
            store(steps[2])


class Watch(NamedTuple):
    changes: int  # how often the value changed under the reader
    torn: int | None  # the first value seen that the writer never stored


def watch(region: Region, bits: int) -> Watch:
    """Load the index with the production load until a torn value, enough changes, or time is up."""
    load, offset = atomic.LOADS[bits], WIDTHS[bits].tail_offset
    ptr, stored = atomic.pointer(region.view), set(flip_values(bits))
    changes, torn, last = 0, None, load(ptr, offset)
    deadline = time.monotonic() + WATCH_S
    while torn is None and changes < WATCH_CHANGES and time.monotonic() < deadline:
        for _ in range(4096):
            value = load(ptr, offset)
            if value != last:
                changes += 1
                last = value
                if value not in stored:
                    torn = value
                    break
    atomic.store_release_u32(ptr, STOP_OFFSET, 1)
    return Watch(changes, torn)


@contextmanager
def on_other_cpus(pid: int) -> Iterator[None]:
    """Keep process ``pid`` and this thread on different CPUs, so that they can run at the same time."""
    ours = os.sched_getaffinity(0)
    if len(ours) < 2:
        yield
        return
    last = max(ours)
    with suppress(ProcessLookupError):  # a child that already died needs no CPU
        os.sched_setaffinity(pid, {last})
    os.sched_setaffinity(0, ours - {last})
    try:
        yield
    finally:
        os.sched_setaffinity(0, ours)


def watch_flipping(region: Region, bits: int, how: str) -> Watch:
    writer = spawn("flip", region, bits=bits, how=how)
    try:
        assert writer.stdout is not None
        if writer.stdout.readline() != "ready\n":
            pytest.fail(f"the writer did not start:\n{stop(writer)}")
        with on_other_cpus(writer.pid):
            seen = watch(region, bits)
        writer.wait(timeout=10)
        assert writer.returncode == 0, stop(writer)
        return seen
    finally:
        stop(writer)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("bits", WIDTHS)
def test_reader_never_sees_an_index_the_producer_did_not_store(region: Region, bits: int) -> None:
    seen = watch_flipping(region, bits, "ring")
    assert seen.torn is None, f"read {seen.torn:#x}, stored only {[hex(v) for v in flip_values(bits)]}"
    if seen.changes < MIN_OVERLAP:
        pytest.skip(f"the writer and reader barely overlapped ({seen.changes} changes seen): inconclusive")


@pytest.mark.timeout(15)
@pytest.mark.parametrize("bits", WIDTHS)
def test_control_struct_pack_into_tears_indices(region: Region, bits: int) -> None:
    seen = watch_flipping(region, bits, "struct")
    if seen.torn is None:
        pytest.xfail(f"no torn value within {WATCH_S} s ({seen.changes} changes seen): "
                     "the writer and reader were rarely running at the same time")
    assert 0 in seen.torn.to_bytes(bits // 8, "little"), f"{seen.torn:#x} should show struct.pack_into's zero fill"


# ---- end to end: descriptors through a free/active pair ---------------------------------------
BATCH = 4  # small batches: many index stores and loads
DESCRIPTORS = 400_000
E2E_LIMIT_S = 15.0  # either side gives up (and fails) after this
BUFFERS = BufferSpace([(0, CAPACITY * NET_BUFFER_SIZE)])
ADDRESSES = BUFFERS.addresses()


def stamp(seq: int) -> tuple[int, int]:
    """The (len, oid) a descriptor carries to say where it is in the sequence (mod 2**17)."""
    return seq % NET_BUFFER_SIZE, (seq // NET_BUFFER_SIZE) % 64


def queue_views(region: Region) -> tuple[memoryview, memoryview]:
    """The free and active queue's bytes."""
    return region.view[FREE_OFFSET:ACTIVE_OFFSET], region.view[ACTIVE_OFFSET:]


def produce(region: Region, channel: ChannelEndFds, count: int) -> None:
    """Stamp ``count`` descriptors in order onto free buffers and pass them on the active queue."""
    free_view, active_view = queue_views(region)
    free, active = NetConsumer("free", free_view, CAPACITY, BUFFERS), NetProducer("active", active_view, CAPACITY)
    end, waiter = ChannelEnd.attach(channel), Waiter()
    waiter.add_notification(0, end.notification)
    deadline, sent = time.monotonic() + E2E_LIMIT_S, 0
    while sent < count:
        buffers = free.dequeue_many(min(BATCH, count - sent))
        if buffers:
            stamped = [(offset, *stamp(sent + i)) for i, (offset, _, _) in enumerate(buffers)]
            if active.enqueue_many(stamped) != len(stamped):
                raise AssertionError(f"descriptor {sent}: the active queue is full, so a buffer was duplicated")
            sent += len(stamped)
            if active.signal_needed():
                end.notify()
        elif not free.request_and_recheck():
            if time.monotonic() > deadline:
                raise TimeoutError(f"stalled after {sent} descriptors: no free buffer came back")
            waiter.wait(1.0)


def consume(region: Region, channel: ChannelEnd, producer: subprocess.Popen) -> None:
    """Take DESCRIPTORS descriptors, check each one's stamp, and give its buffer back."""
    free_view, active_view = queue_views(region)
    free, active = NetProducer("free", free_view, CAPACITY), NetConsumer("active", active_view, CAPACITY, BUFFERS)
    waiter = Waiter()
    waiter.add_notification(0, channel.notification)
    deadline, received = time.monotonic() + E2E_LIMIT_S, 0
    while received < DESCRIPTORS:
        descs = active.dequeue_many(BATCH)
        if descs:
            got = [(length, oid) for _, length, oid in descs]
            assert got == [stamp(received + i) for i in range(len(descs))], \
                f"descriptors from {received} on were lost or duplicated"
            received += len(descs)
            if free.enqueue_many([(offset, 0, 0) for offset, _, _ in descs]) != len(descs):
                raise AssertionError(f"descriptor {received}: the free queue is full, so a buffer was duplicated")
            if free.signal_needed():
                channel.notify()
        elif not active.request_and_recheck():
            if producer.poll() is not None:
                pytest.fail(f"the producer exited ({producer.returncode}) after {received} "
                            f"descriptors:\n{stop(producer)}")
            assert time.monotonic() < deadline, f"stalled after {received} descriptors"
            waiter.wait(1.0)


@pytest.fixture
def channel(resources: Resources) -> tuple[ChannelEnd, ChannelEndFds]:
    """Our end of a channel, attached, and the fds of the other end (its eventfds are ours too)."""
    ours, theirs = channel_pair()
    resources.on_close(lambda: os.close(theirs.words_fd))
    end = ChannelEnd.attach(ours)
    resources.on_close(end.close)
    return end, theirs


@pytest.mark.timeout(20)
def test_descriptors_cross_processes_without_loss_duplication_or_protocol_errors(
        region: Region, channel: tuple[ChannelEnd, ChannelEndFds]) -> None:
    fill_free(NetProducer("free", queue_views(region)[0], CAPACITY), ADDRESSES)
    ours, theirs = channel
    producer = spawn("produce", region, (theirs.recv_eventfd, theirs.send_eventfd, theirs.words_fd),
                     channel=asdict(theirs), count=DESCRIPTORS)
    try:
        with on_other_cpus(producer.pid):
            consume(region, ours, producer)
        producer.wait(timeout=10)
        assert producer.returncode == 0, stop(producer)
    finally:
        stop(producer)


def main(role: str, params: dict[str, Any]) -> None:
    region = Region.from_fd("torn", params["region_fd"], REGION_SIZE, True)
    if role == "flip":
        flip(region, params["bits"], params["how"])
    else:
        produce(region, ChannelEndFds(**params["channel"]), params["count"])


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
