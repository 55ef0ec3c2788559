"""A net free/active queue pair between two processes, sDDF style.

The producer takes a free buffer, writes a payload into it (sequence number, crc32 of a body
of varying length, the body) and enqueues it on the active queue; the consumer dequeues it,
checks sequence, length, oid and checksum, and returns the buffer on the free queue. Both
consume with a :class:`NetConsumer` that validates buffers, and both follow the signalling
protocol: ``request_and_recheck`` before sleeping, ``signal_needed`` after publishing.
Optional pauses (0-200 µs) land before a publish, between a publish and its signal check,
before requesting a signal and re-checking, and before sleeping.
"""
from __future__ import annotations

import random
import struct
import time
from typing import Any, Callable
from zlib import crc32

from sddf.net.queue import MAX_OID, NET_BUFFER_SIZE, BufferSpace, NetConsumer, NetProducer, fill_free, queue_size
from sddf.shm import round_to_pages
from xproc.link import Link, Watchdog, attach, pauser
from xproc.procs import Shared, run_workers, spec

HEADER = struct.Struct("<QI")  # sequence number, crc32 of the body that follows
MAX_BODY = 300
POOL_SIZE = 1 << 16
STRIDE = 7919  # where a sequence number's body starts in the pool: seq * STRIDE mod (pool - MAX_BODY)

Work = Callable[[list[tuple], int], list[tuple]]  # (descriptors taken, sequence number of the first) -> to pass on


def body_length(seq: int) -> int:
    return seq * 13 % (MAX_BODY + 1)


def filler(data: memoryview, seed: int) -> Work:
    """Fill free buffers with the payloads of consecutive sequence numbers; return their descriptors."""
    pool = random.Random(seed).randbytes(POOL_SIZE)
    span = POOL_SIZE - MAX_BODY

    def fill(buffers: list[tuple], first: int) -> list[tuple]:
        descs = []
        for seq, (offset, _, _) in enumerate(buffers, first):
            start = seq * STRIDE % span
            body = pool[start:start + body_length(seq)]
            HEADER.pack_into(data, offset, seq, crc32(body))
            end = offset + HEADER.size + len(body)
            data[offset + HEADER.size:end] = body
            descs.append((offset, end - offset, seq & MAX_OID))
        return descs

    return fill


def checker(data: memoryview) -> Work:
    """Check the payloads of consecutive sequence numbers; return the buffers, emptied."""

    def check(descs: list[tuple], first: int) -> list[tuple]:
        for expected, (offset, length, oid) in enumerate(descs, first):
            seq, crc = HEADER.unpack_from(data, offset)
            want = (expected, HEADER.size + body_length(expected), expected & MAX_OID, True)
            got = (seq, length, oid, crc32(data[offset + HEADER.size:offset + length]) == crc)
            if got != want:
                raise AssertionError(f"descriptor {expected} (buffer {offset:#x}): (sequence number, len, oid, "
                                     f"crc32 ok) is {got}, not {want}: lost, duplicated, reordered or torn")
        return [(offset, 0, 0) for offset, _, _ in descs]

    return check


def pump(role: str, inq: NetConsumer, outq: NetProducer, work: Work, params: dict[str, Any]) -> dict[str, Any]:
    """Move ``count`` descriptors from ``inq`` through ``work`` to ``outq`` in random batches."""
    count, max_batch = params["count"], params["max_batch"]
    rng = random.Random(f"{params['seed']}-{role}")
    pause = pauser(rng, params["jitter"])
    link, watchdog = Link(params["channel"]), Watchdog(params["segment"], params["timeout_s"])
    done, started = 0, time.monotonic()

    def stalled() -> str:
        return (f"{role}: not woken within {watchdog.timeout_s} s of repetition {done // watchdog.segment} "
                f"start, after {done} of {count} descriptors; {inq.name} holds {inq.length()} now")

    while done < count:
        taken = inq.dequeue_many(min(rng.randint(1, max_batch), count - done))
        if taken:
            out = work(taken, done)
            pause()
            if outq.enqueue_many(out) != len(out):
                raise AssertionError(f"{role}: {outq.name} is full, yet it has a slot for every buffer")
            pause()
            if outq.signal_needed():
                link.notify()
            watchdog.count(done, done + len(taken))
            done += len(taken)
        else:
            pause()
            if not inq.request_and_recheck():
                pause()
                link.sleep(watchdog, stalled)
    return {"count": done, "seconds": time.monotonic() - started, "sleeps": link.sleeps,
            "slowest_repetition_s": watchdog.slowest_s}


def layout(capacity: int) -> tuple[int, int, int]:
    """Where the active queue starts in the queue region, that region's size, the data region's size."""
    active = round_to_pages(queue_size(capacity))
    return active, 2 * active, round_to_pages(capacity * NET_BUFFER_SIZE)


def ends(params: dict[str, Any]) -> tuple[memoryview, memoryview, memoryview, BufferSpace]:
    """The free queue, active queue and data region views, and the data region's buffers."""
    queues, data = attach(params, "queues"), attach(params, "data")
    active, _, data_size = layout(params["capacity"])
    return queues.view[:active], queues.view[active:], data.view, BufferSpace([(0, data_size)])


def produce(params: dict[str, Any]) -> dict[str, Any]:
    free, active, data, valid = ends(params)
    cap = params["capacity"]
    return pump("producer", NetConsumer("free", free, cap, valid), NetProducer("active", active, cap),
                filler(data, params["seed"]), params)


def consume(params: dict[str, Any]) -> dict[str, Any]:
    free, active, data, valid = ends(params)
    cap = params["capacity"]
    return pump("consumer", NetConsumer("active", active, cap, valid), NetProducer("free", free, cap),
                checker(data), params)


def run_pair(*, capacity: int, count: int, max_batch: int, segment: int, timeout_s: float,
             jitter: float, seed: int, limit_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a producer and a consumer over ``capacity`` buffers (all on the free queue at first)."""
    active, queues_size, data_size = layout(capacity)
    with Shared() as shared:
        regions = {"queues": shared.region("net-queues", queues_size), "data": shared.region("net-data", data_size)}
        fill_free(NetProducer("free", regions["queues"].view[:active], capacity),
                  [i * NET_BUFFER_SIZE for i in range(capacity)])
        ours, theirs = shared.channel()
        params = {"capacity": capacity, "count": count, "max_batch": max_batch, "segment": segment,
                  "timeout_s": timeout_s, "jitter": jitter, "seed": seed}
        producer, consumer = run_workers([spec("net.produce", params, regions, ours),
                                          spec("net.consume", params, regions, theirs)], limit_s)
    assert producer["count"] == consumer["count"] == count
    return producer, consumer
