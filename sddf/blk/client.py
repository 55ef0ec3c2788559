"""The plumbing every block client shares (what sDDF's blk client helpers are to a C client).

:class:`BlkClient` is a client's side of its queues: it hands out request ids, remembers what
each outstanding request asked for, and checks every response against that — a response with an
id the client did not send (or sent and already had answered) is refused and counted, never
trusted. :class:`DataSlots` hands out transfer-sized pieces of the client's data region.
Neither notifies: the component calls ``notify(client.channel)`` after submitting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from sddf.blk.config import BlkClientConfig
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkStorageInfo, ReqProducer, RespConsumer,
                            StorageInfoReader)


@dataclass(frozen=True)
class Request:
    """An outstanding request as the client sent it (``offset`` is in its data region)."""

    code: int
    offset: int
    block: int
    count: int


@dataclass(frozen=True)
class Completion:
    """A response matched to the request it answers."""

    id: int
    status: int
    success_count: int
    request: Request


class BlkClient:
    """A client's request and response queues, its data region and its partition's storage info."""

    def __init__(self, pd: str, regions: Mapping[str, memoryview], cfg: BlkClientConfig,
                 refuse: Callable[[str, object], None]) -> None:
        req, resp, capacity = cfg.queues.views(regions)
        self.requests = ReqProducer(f"{pd}:blk_req", req, capacity)
        self.responses = RespConsumer(f"{pd}:blk_resp", resp, capacity)
        self.data = regions[cfg.data.map]
        self.channel = cfg.queues.channel
        self.capacity = capacity
        self._info = StorageInfoReader(regions[cfg.queues.storage_info])
        self._refuse = refuse
        self._free_ids = list(range(capacity - 1, -1, -1))
        self.outstanding: dict[int, Request] = {}

    def storage_info(self) -> BlkStorageInfo | None:
        """The partition's storage info, or None while the virtualiser has not made it ready."""
        return self._info.read()

    def submit(self, code: int, offset: int, block: int, count: int) -> int | None:
        """Queue a request; its id, or None if ``capacity`` requests are already outstanding."""
        if not self._free_ids:
            return None
        rid = self._free_ids.pop()
        if not self.requests.enqueue((code, offset, block, count, rid)):
            self._free_ids.append(rid)
            return None
        self.outstanding[rid] = Request(code, offset, block, count)
        return rid

    def read(self, offset: int, block: int, count: int) -> int | None:
        return self.submit(BlkReqCode.READ, offset, block, count)

    def write(self, offset: int, block: int, count: int) -> int | None:
        return self.submit(BlkReqCode.WRITE, offset, block, count)

    def flush(self) -> int | None:
        return self.submit(BlkReqCode.FLUSH, 0, 0, 0)

    def completions(self) -> list[Completion]:
        """Take every response queued; those with an unknown id are refused (and counted)."""
        done = []
        for status, success_count, rid in self.responses.dequeue_many():
            request = self.outstanding.pop(rid, None)
            if request is None:
                self._refuse("blk_unknown_response", f"a response for id {rid}, which has no outstanding request")
                continue
            self._free_ids.append(rid)
            done.append(Completion(rid, status, success_count, request))
        return done


class DataSlots:
    """Transfer-sized (4 KiB) pieces of a data region, handed out in runs of ``count``."""

    def __init__(self, size: int) -> None:
        self.slots = size // BLK_TRANSFER_SIZE
        self._free = [(0, self.slots)]  # (first slot, slots) runs, sorted

    def take(self, count: int) -> int | None:
        """The byte offset of ``count`` free consecutive slots, or None if there are none."""
        for i, (first, n) in enumerate(self._free):
            if n >= count:
                self._free[i:i + 1] = [(first + count, n - count)] if n > count else []
                return first * BLK_TRANSFER_SIZE
        return None

    def give(self, offset: int, count: int) -> None:
        """Give back what :meth:`take` handed out at ``offset``."""
        first = offset // BLK_TRANSFER_SIZE
        runs = sorted([*self._free, (first, count)])
        merged: list[tuple[int, int]] = []
        for start, n in runs:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((start, n))
        self._free = merged
