"""A block client that checks its partition: writes patterns, flushes, reads them back, compares.

Each round writes every block of the range it tests (``blocks`` from the partition's start, in
requests of ``blocks_per_request``) with a pattern naming the round and the block, sends a FLUSH
after every ``flush_every`` writes and after the last, then reads the range back and checks every
block. Up to a queue's worth of requests are in flight. A request answered ERR_IO (a driver that
restarted) is sent again; any other error, a response for a request it never sent, or a block that
reads back wrong is a fault naming the block. It logs a line per round and
``done (R rounds, N blocks verified, K re-issued)`` after the last (``rounds=0``: forever).
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from sddf.blk.client import BlkClient, Completion, DataSlots
from sddf.blk.config import BlkClientConfig
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus
from sddf.component import Component

STAMP = struct.Struct("<8sII")
MAGIC = b"sddfverf"


def pattern(round_: int, block: int) -> bytes:
    """What block ``block`` (of the partition) holds after round ``round_`` wrote it."""
    return STAMP.pack(MAGIC, round_, block) * (BLK_TRANSFER_SIZE // STAMP.size)


@dataclass
class BlkVerifyConfig:
    blk: BlkClientConfig
    rounds: int = 3
    blocks: int = 256
    blocks_per_request: int = 4
    flush_every: int = 8


class VerifyError(Exception):
    """The partition did not hold what was written, or the virtualiser answered wrongly."""


class BlkVerifier(Component):
    kind = "blk.client"
    Config = BlkVerifyConfig

    def init(self) -> None:
        self.blk = BlkClient(self.name, self.regions, self.config.blk, self.refuse)
        self.slots = DataSlots(len(self.blk.data))
        self.round = 0
        self.blocks = 0
        self.todo: deque[tuple[int, int, int]] = deque()  # (code, block, count) not yet sent
        self.sent: dict[int, int] = {}  # request id -> its data offset
        self.reading = False  # the round's writes are done: its reads are under way
        self.verified = self.reissued = 0
        self._next_round()

    def notified(self, ch: int) -> None:
        if ch != self.blk.channel:
            return
        if self.round == 0:
            self._next_round()
            return
        for done in self.blk.completions():
            self._completed(done)
        if not self.todo and not self.blk.outstanding:
            self._next_phase()
        self._send()

    def _next_round(self) -> None:
        """Start writing the next round (once the partition is ready), or stop after the last."""
        if self.round == 0:
            info = self.blk.storage_info()
            if info is None:
                return  # the virtualiser notifies us when it makes the partition ready
            if info.read_only:
                raise VerifyError(f"{self.name}: the partition is read-only: nothing to verify")
            self.blocks = min(self.config.blocks, info.capacity)
        elif self.round == self.config.rounds:
            self.log(f"done ({self.round} rounds, {self.verified} blocks verified, {self.reissued} re-issued)")
            self.round = -1
            return
        self.round += 1
        self.reading = False
        step, writes = self.config.blocks_per_request, 0
        for block in range(0, self.blocks, step):
            self.todo.append((BlkReqCode.WRITE, block, min(step, self.blocks - block)))
            writes += 1
            if writes % self.config.flush_every == 0:
                self.todo.append((BlkReqCode.FLUSH, 0, 0))
        self.todo.append((BlkReqCode.FLUSH, 0, 0))
        self._send()

    def _next_phase(self) -> None:
        """After a round's writes (and flushes) are acknowledged, read the range back; after the
        reads, log the round and start the next."""
        if self.round <= 0:
            return
        if self.reading:
            self.log(f"round {self.round}: {self.blocks} blocks written, flushed, read back and verified")
            self._next_round()
            return
        self.reading = True
        step = self.config.blocks_per_request
        self.todo.extend((BlkReqCode.READ, block, min(step, self.blocks - block))
                         for block in range(0, self.blocks, step))

    def _send(self) -> None:
        sent = False
        while self.todo:
            code, block, count = self.todo[0]
            offset = self.slots.take(max(count, 1))
            if offset is None:
                break
            if code == BlkReqCode.WRITE:
                self.blk.data[offset:offset + count * BLK_TRANSFER_SIZE] = b"".join(
                    pattern(self.round, b) for b in range(block, block + count))
            rid = self.blk.submit(code, offset, block, count)
            if rid is None:
                self.slots.give(offset, max(count, 1))
                break
            self.todo.popleft()
            self.sent[rid] = offset
            sent = True
        if sent:
            self.deferred_notify(self.blk.channel)

    def _completed(self, done: Completion) -> None:
        req = done.request
        offset = self.sent.pop(done.id)
        self.slots.give(offset, max(req.count, 1))
        if done.status == BlkRespStatus.ERR_IO:  # the driver restarted: its outcome is unknown, send it again
            self.reissued += 1
            self.todo.appendleft((req.code, req.block, req.count))
            return
        if done.status != BlkRespStatus.OK:
            raise VerifyError(f"{self.name}: request {req} answered with status {done.status}")
        if req.code == BlkReqCode.READ:
            for i in range(req.count):
                got = self.blk.data[offset + i * BLK_TRANSFER_SIZE:offset + (i + 1) * BLK_TRANSFER_SIZE]
                if got != pattern(self.round, req.block + i):
                    raise VerifyError(f"{self.name}: block {req.block + i} of the partition reads back "
                                      f"{bytes(got[:STAMP.size])!r}…, not round {self.round}'s pattern")
            self.verified += req.count
