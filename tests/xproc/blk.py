"""A blk request/response pair between a client process and a server (driver) process.

The client submits random batches of READ, WRITE and FLUSH requests, each with the next id
and a data slot of its own; for a WRITE it first stamps every transfer block of the slot.
The server checks each WRITE's stamps, stamps each READ's blocks, and answers in order. The
client checks that responses come back in id order with the full success count, and each
READ's stamps. Blk queues have no signal flag: each side notifies after every publish.
"""
from __future__ import annotations

import random
import struct
import time
from collections import deque
from typing import Any

from sddf.blk import queue as blk
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, ReqConsumer, ReqProducer,
                            RespConsumer, RespProducer, req_queue_size, request_validator, resp_queue_size)
from sddf.shm import round_to_pages
from xproc.link import Link, Watchdog, attach
from xproc.procs import Shared, run_workers, spec

MAX_COUNT = 4  # transfer blocks per request, at most
SLOT_SIZE = MAX_COUNT * BLK_TRANSFER_SIZE
STAMP = struct.Struct("<IQ")  # request id, block number; then STAMP_BODY bytes from the pool
STAMP_BODY = 52
POOL_SIZE = 1 << 14
CODES = (BlkReqCode.READ, BlkReqCode.WRITE, BlkReqCode.READ, BlkReqCode.WRITE, BlkReqCode.FLUSH)


class Stamps:
    """What a transfer block holds for a request id and block number (both sides know the seed)."""

    def __init__(self, data: memoryview, seed: int) -> None:
        self.data = data
        self.pool = random.Random(seed).randbytes(POOL_SIZE)

    def expected(self, rid: int, block: int) -> bytes:
        start = (rid * 31 + block) % (POOL_SIZE - STAMP_BODY)
        return STAMP.pack(rid, block) + self.pool[start:start + STAMP_BODY]

    def write(self, offset: int, block: int, count: int, rid: int) -> None:
        for k in range(count):
            stamp = self.expected(rid, block + k)
            at = offset + k * BLK_TRANSFER_SIZE
            self.data[at:at + len(stamp)] = stamp

    def check(self, who: str, offset: int, block: int, count: int, rid: int) -> None:
        for k in range(count):
            stamp = self.expected(rid, block + k)
            at = offset + k * BLK_TRANSFER_SIZE
            if self.data[at:at + len(stamp)] != stamp:
                raise AssertionError(f"{who}: request {rid} block {block + k} at {at:#x} holds "
                                     f"{bytes(self.data[at:at + 12]).hex()}…, not its stamp")


def layout(capacity: int) -> tuple[int, int, int]:
    """Where the response queue starts in the queue region, that region's size, the data region's size."""
    resp = round_to_pages(req_queue_size(capacity))
    return resp, resp + round_to_pages(resp_queue_size(capacity)), capacity * SLOT_SIZE


def client(params: dict[str, Any]) -> dict[str, Any]:
    """Submit ``count`` requests (at most ``capacity`` outstanding) and check every response."""
    queues, data = attach(params, "queues"), attach(params, "data")
    cap, count, max_batch = params["capacity"], params["count"], params["max_batch"]
    resp_at = layout(cap)[0]
    req, resp = ReqProducer("req", queues.view[:resp_at], cap), RespConsumer("resp", queues.view[resp_at:], cap)
    stamps, rng = Stamps(data.view, params["seed"]), random.Random(f"{params['seed']}-client")
    link, watchdog = Link(params["channel"]), Watchdog(params["segment"], params["timeout_s"])
    outstanding: deque[tuple] = deque()
    free_slots, submitted, done, started = list(range(cap)), 0, 0, time.monotonic()
    while done < count:
        batch: list[tuple] = []
        for _ in range(min(rng.randint(1, max_batch), len(free_slots), count - submitted)):
            code = rng.choice(CODES)
            blocks = 0 if code == BlkReqCode.FLUSH else rng.randint(1, MAX_COUNT)
            request = (code, free_slots.pop() * SLOT_SIZE, rng.randrange(1 << 40), blocks, submitted + len(batch))
            if code == BlkReqCode.WRITE:
                stamps.write(*request[1:])
            batch.append(request)
        if batch:
            if req.enqueue_many(batch) != len(batch):
                raise AssertionError("client: the request queue is full with fewer than capacity outstanding")
            outstanding.extend(batch)
            submitted += len(batch)
            link.notify()
        responses = resp.dequeue_many(rng.randint(1, max_batch))
        for status, success, rid in responses:
            code, offset, block, blocks, expected_id = outstanding.popleft()
            if (rid, status, success) != (expected_id, BlkRespStatus.OK, blocks):
                raise AssertionError(f"client: response (id {rid}, status {status}, {success} blocks) "
                                     f"for request {expected_id} of {blocks} blocks")
            if code == BlkReqCode.READ:
                stamps.check("client", offset, block, blocks, rid)
            free_slots.append(offset // SLOT_SIZE)
        watchdog.count(done, done + len(responses))
        done += len(responses)
        if not batch and not responses:
            link.sleep(watchdog, lambda: f"client: not woken within {watchdog.timeout_s} s after {done} of {count} "
                                         f"responses; {resp.length()} queued now")
    return {"count": done, "seconds": time.monotonic() - started, "sleeps": link.sleeps}


def server(params: dict[str, Any]) -> dict[str, Any]:
    """Serve ``count`` requests: check WRITE data, stamp READ data, answer each in order."""
    queues, data = attach(params, "queues"), attach(params, "data")
    cap, count, max_batch = params["capacity"], params["count"], params["max_batch"]
    resp_at, _, data_size = layout(cap)
    req = ReqConsumer("req", queues.view[:resp_at], cap, request_validator(0, data_size))
    resp = RespProducer("resp", queues.view[resp_at:], cap)
    stamps, rng = Stamps(data.view, params["seed"]), random.Random(f"{params['seed']}-server")
    link, watchdog = Link(params["channel"]), Watchdog(params["segment"], params["timeout_s"])
    done, started = 0, time.monotonic()
    while done < count:
        requests = req.dequeue_many(rng.randint(1, max_batch))
        if not requests:
            link.sleep(watchdog, lambda: f"server: not woken within {watchdog.timeout_s} s after {done} of {count} "
                                         f"requests; {req.length()} queued now")
            continue
        for code, offset, block, blocks, rid in requests:
            if code == BlkReqCode.WRITE:
                stamps.check("server", offset, block, blocks, rid)
            elif code == BlkReqCode.READ:
                stamps.write(offset, block, blocks, rid)
        responses = [(BlkRespStatus.OK, blocks, rid) for _, _, _, blocks, rid in requests]
        if resp.enqueue_many(responses) != len(responses):
            raise AssertionError("server: the response queue is full with fewer than capacity outstanding")
        link.notify()
        watchdog.count(done, done + len(requests))
        done += len(requests)
    return {"count": done, "seconds": time.monotonic() - started, "sleeps": link.sleeps}


def run_pair(*, capacity: int, count: int, max_batch: int, first_index: int, seed: int,
             stall_s: float, limit_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a client and a server; both queues' indices start at ``first_index``."""
    resp_at, queues_size, data_size = layout(capacity)
    with Shared() as shared:
        regions = {"queues": shared.region("blk-queues", queues_size),
                   "data": shared.region("blk-data", round_to_pages(data_size))}
        for base in (0, resp_at):
            for offset in (blk.LAYOUT.head_offset, blk.LAYOUT.tail_offset):
                struct.pack_into("<I", regions["queues"].view, base + offset, first_index)
        ours, theirs = shared.channel()
        params = {"capacity": capacity, "count": count, "max_batch": max_batch, "seed": seed,
                  "segment": 1, "timeout_s": stall_s}
        results = run_workers([spec("blk.client", params, regions, ours),
                               spec("blk.server", params, regions, theirs)], limit_s)
    assert results[0]["count"] == results[1]["count"] == count
    return results[0], results[1]
