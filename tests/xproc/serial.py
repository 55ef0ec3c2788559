"""A byte stream through a small serial queue between a writer process and a reader process.

Both sides derive the same pseudo-random stream from the seed. The writer enqueues random
chunks and always notifies the reader; when the queue is full it asks to be told about free
space (``producer_signalled``, via ``request_and_recheck``) and sleeps. The reader checks
every chunk against the stream and, after making room, notifies the writer if it asked.
"""
from __future__ import annotations

import random
import struct
import time
from typing import Any
from zlib import crc32

from sddf.serial import queue as serial
from sddf.serial.queue import SerialConsumer, SerialProducer
from sddf.shm import PAGE_SIZE, round_to_pages
from xproc.link import Link, Watchdog, attach
from xproc.procs import Shared, run_workers, spec


def stream(params: dict[str, Any]) -> bytes:
    return random.Random(params["seed"]).randbytes(params["size"])


def setup(params: dict[str, Any], role: str) -> tuple[memoryview, memoryview, random.Random, Link, Watchdog]:
    """The queue header and data views, this side's rng, its link and its watchdog."""
    header, data = attach(params, "header"), attach(params, "data")
    return (header.view, data.view, random.Random(f"{params['seed']}-{role}"), Link(params["channel"]),
            Watchdog(1, params["timeout_s"]))


def writer(params: dict[str, Any]) -> dict[str, Any]:
    header, data, rng, link, watchdog = setup(params, "writer")
    queue = SerialProducer("serial", header, data, params["capacity"])
    out, sent, started = memoryview(stream(params)), 0, time.monotonic()
    while sent < len(out):
        chunk = out[sent:sent + rng.randint(1, params["max_chunk"])]
        put = queue.enqueue(chunk)
        if put:
            link.notify()
            watchdog.count(sent, sent + put)
            sent += put
        if put < len(chunk) and not queue.request_and_recheck():
            link.sleep(watchdog, lambda: f"writer: not woken within {watchdog.timeout_s} s after {sent} bytes; "
                                         f"{queue.free_slots()} bytes free now")
    return {"bytes": sent, "crc32": crc32(out), "seconds": time.monotonic() - started, "sleeps": link.sleeps}


def reader(params: dict[str, Any]) -> dict[str, Any]:
    header, data, rng, link, watchdog = setup(params, "reader")
    queue = SerialConsumer("serial", header, data, params["capacity"])
    expected, got, crc, started = memoryview(stream(params)), 0, 0, time.monotonic()
    while got < len(expected):
        chunk = queue.dequeue(rng.randint(1, params["max_chunk"]))
        if not chunk:
            link.sleep(watchdog, lambda: f"reader: not woken within {watchdog.timeout_s} s after {got} bytes; "
                                         f"{queue.length()} bytes queued now")
            continue
        if chunk != expected[got:got + len(chunk)]:
            raise AssertionError(f"reader: bytes {got}..{got + len(chunk)} differ from the stream")
        if queue.signal_needed():
            link.notify()
        crc = crc32(chunk, crc)
        watchdog.count(got, got + len(chunk))
        got += len(chunk)
    return {"bytes": got, "crc32": crc, "seconds": time.monotonic() - started, "sleeps": link.sleeps}


def run_pair(*, capacity: int, size: int, max_chunk: int, first_index: int, seed: int,
             stall_s: float, limit_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stream ``size`` bytes through a queue of ``capacity`` bytes whose indices start at ``first_index``."""
    with Shared() as shared:
        regions = {"header": shared.region("serial-header", PAGE_SIZE),
                   "data": shared.region("serial-data", round_to_pages(capacity))}
        for offset in (serial.LAYOUT.head_offset, serial.LAYOUT.tail_offset):
            struct.pack_into("<I", regions["header"].view, offset, first_index)
        ours, theirs = shared.channel()
        params = {"capacity": capacity, "size": size, "max_chunk": max_chunk, "seed": seed, "timeout_s": stall_s}
        results = run_workers([spec("serial.writer", params, regions, ours),
                               spec("serial.reader", params, regions, theirs)], limit_s)
    return results[0], results[1]
