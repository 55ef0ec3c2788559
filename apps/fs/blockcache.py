"""A file-system server's view of its block partition: 512-byte sectors over sDDF's 4 KiB blocks.

:class:`BlockPort` turns a block client's requests into :class:`Transfer` objects (request id,
data-region slots, copying data in and out). :class:`BlockCache` is what a FAT library reads and
writes sectors through:

- a cache of 4 KiB blocks (LRU; dirty blocks and blocks with a write in flight stay);
- read-ahead: once a reader asks for consecutive blocks, the blocks after them are requested
  before they are needed, in one request per half window, while the reader works on;
- sector writes need no read of their block: a block written in part holds which sectors are
  valid, and is read (and merged under what was written) only if a reader wants the rest, or
  when it must be sent before the rest was written;
- write-behind: writes land in the cache; :meth:`BlockCache.flush` sends the dirty blocks as
  runs of consecutive blocks (one request each) and returns the transfers without waiting, so
  a command's writes are in flight together, and the next command runs meanwhile. A block
  rewritten while its previous write is in flight waits for it (the device may reorder two
  writes in flight). A read of a block with a write in flight is served from the cache.

It never blocks on its own: where it must wait for the device it calls ``wait()``, which the
server makes hand control back to its event loop until a block notification arrives (the loop
then calls :meth:`BlockCache.completed`). A failed transfer that a read waits for raises
:class:`BlockIoError`; failed writes are reported through their transfers.
"""
from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Callable, Iterable

from sddf.blk.client import BlkClient, DataSlots
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus

SECTOR = 512
SECTORS_PER_BLOCK = BLK_TRANSFER_SIZE // SECTOR
MAX_COUNT = 0xFFFF  # a request's count is a u16
FULL = (1 << SECTORS_PER_BLOCK) - 1  # a block's valid-sector mask when all of it is known


class BlockIoError(Exception):
    """The block device failed a transfer (or a request lay outside the partition)."""


class Transfer:
    """One block request: what it asked for and, once ``done``, whether it succeeded. A
    successful READ's data is in ``data``, or, for a READ started with ``into``, copied into
    ``into`` from byte ``skip`` of its first block."""

    __slots__ = ("code", "block", "count", "offset", "done", "ok", "data", "into", "skip")

    def __init__(self, code: int, block: int, count: int, offset: int,
                 into: memoryview | None = None, skip: int = 0) -> None:
        self.code, self.block, self.count, self.offset = code, block, count, offset
        self.into, self.skip = into, skip
        self.done = self.ok = False
        self.data = b""

    def __repr__(self) -> str:
        state = ("ok" if self.ok else "failed") if self.done else "in flight"
        return f"<{BlkReqCode(self.code).name} blocks {self.block}+{self.count} {state}>"


class BlockPort:
    """A block client's requests as transfers: ids and data-region slots are taken at submission
    and given back at completion; a READ's data is copied out then."""

    def __init__(self, client: BlkClient, data: memoryview) -> None:
        self._client = client
        self._data = data
        self._slots = DataSlots(len(data))
        #: the longest run one request may carry: a quarter of the data region (so several fit)
        self.max_run = max(1, min(MAX_COUNT, self._slots.slots // 4))
        self._inflight: dict[int, Transfer] = {}
        self.submitted = 0  # requests queued since the component last notified the device

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    def start(self, code: int, block: int, count: int, payload: bytes | None = None,
              into: memoryview | None = None, skip: int = 0) -> Transfer | None:
        """Queue a request (``payload``: a WRITE's data; ``into``, ``skip``: where a READ's data
        goes, see :class:`Transfer`); None if no request id or data slots are free now (try again
        after a completion)."""
        offset = self._slots.take(count) if count else 0
        if offset is None:
            return None
        if payload is not None:
            self._data[offset:offset + len(payload)] = payload
        rid = self._client.submit(code, offset, block, count)
        if rid is None:
            if count:
                self._slots.give(offset, count)
            return None
        transfer = self._inflight[rid] = Transfer(code, block, count, offset, into, skip)
        self.submitted += 1
        return transfer

    def completed(self) -> list[Transfer]:
        """Every transfer the device answered since last asked (unknown ids are refused by the client)."""
        done = []
        for c in self._client.completions():
            t = self._inflight.pop(c.id)
            t.ok = c.status == BlkRespStatus.OK and c.success_count == t.count
            if t.ok and t.code == BlkReqCode.READ:
                if t.into is None:
                    t.data = bytes(self._data[t.offset:t.offset + t.count * BLK_TRANSFER_SIZE])
                else:
                    start = t.offset + t.skip
                    t.into[:] = self._data[start:start + len(t.into)]
            if t.count:
                self._slots.give(t.offset, t.count)
            t.done = True
            done.append(t)
        return done


class BlockCache:
    """Sectors of a partition of ``blocks`` 4 KiB blocks, cached; see the module docstring."""

    def __init__(self, port: BlockPort, blocks: int, wait: Callable[[], None],
                 cache_blocks: int = 1024, read_ahead: int = 64, counters: Counter[str] | None = None) -> None:
        """``counters`` (a component's) counts the requests sent: ``blk_reads``,
        ``blk_reads_uncached`` (:meth:`read_uncached`'s), ``blk_writes``, ``blk_flushes``."""
        self._port = port
        self.blocks = blocks
        self._wait = wait
        self._limit = max(cache_blocks, 2 * port.max_run)
        self._window = read_ahead
        self._dirty_limit = max(1, self._limit // 4)
        self._cache: OrderedDict[int, bytearray] = OrderedDict()  # LRU first
        self._dirty: set[int] = set()
        self._partial: dict[int, int] = {}  # cached block -> mask of its valid sectors, when not FULL
        self._reads: dict[int, Transfer] = {}   # block -> the read in flight that brings it
        self._writes: dict[int, Transfer] = {}  # block -> its write in flight
        self._next = self._ahead = -1  # the sequential stream: its next block, and how far it is requested
        self._sent: list[Transfer] = []  # writes sent since take_sent
        self.requests: Counter[str] = Counter() if counters is None else counters

    # ---- what the event loop calls --------------------------------------------------------
    def completed(self, transfers: Iterable[Transfer]) -> None:
        """Take in finished transfers: a READ's blocks enter the cache, under what was written to
        them since (the cache is newer than the disk)."""
        for t in transfers:
            blocks = range(t.block, t.block + t.count)
            if t.code == BlkReqCode.READ:
                for i, b in enumerate(blocks):
                    if self._reads.get(b) is t:
                        del self._reads[b]
                        if t.ok:
                            self._fill(b, t.data[i * BLK_TRANSFER_SIZE:(i + 1) * BLK_TRANSFER_SIZE])
            elif t.code == BlkReqCode.WRITE:
                for b in blocks:
                    if self._writes.get(b) is t:
                        del self._writes[b]
        self._evict()

    def _fill(self, b: int, disk: bytes) -> None:
        """Block ``b`` as the disk holds it: cached, or merged under the sectors written since."""
        block = self._cache.get(b)
        if block is None:
            self._cache[b] = bytearray(disk)
            return
        mask = self._partial.pop(b, FULL)
        for s in range(SECTORS_PER_BLOCK):
            if not mask >> s & 1:
                block[s * SECTOR:(s + 1) * SECTOR] = disk[s * SECTOR:(s + 1) * SECTOR]

    # ---- sectors ------------------------------------------------------------------------
    def read(self, sector: int, count: int) -> memoryview:
        """``count`` sectors from ``sector``: a view (a binding indexes it several times faster than
        bytes), into the cache when they lie in one block."""
        wanted = self._sectors(sector, count)
        hit = all(self._valid(b, mask) for b, mask in wanted)
        self._fetch(wanted)
        first, last = wanted[0][0], wanted[-1][0]
        self._read_ahead(first, last, hit)
        lo = (sector % SECTORS_PER_BLOCK) * SECTOR
        if first == last:
            return memoryview(self._cache[first])[lo:lo + count * SECTOR]
        return memoryview(b"".join(self._cache[b] for b in range(first, last + 1)))[lo:lo + count * SECTOR]

    def write(self, sector: int, count: int, data: bytes | memoryview) -> None:
        """Put ``count`` sectors at ``sector`` in the cache (sent by :meth:`flush`)."""
        at = 0
        for b, mask in self._sectors(sector, count):
            lo = (mask & -mask).bit_length() - 1  # the first sector written in this block
            size = bin(mask).count("1") * SECTOR
            piece, at = data[at:at + size], at + size
            block = self._cache.get(b)
            if block is None:
                block = self._cache[b] = bytearray(BLK_TRANSFER_SIZE)
                self._partial[b] = 0
            elif self._valid(b, mask) and block[lo * SECTOR:lo * SECTOR + size] == piece:
                self._cache.move_to_end(b)
                continue  # unchanged: nothing to write
            block[lo * SECTOR:lo * SECTOR + size] = piece
            if b in self._partial:
                self._partial[b] |= mask
                if self._partial[b] == FULL:
                    del self._partial[b]
            self._cache.move_to_end(b)
            self._dirty.add(b)
        if len(self._dirty) >= self._dirty_limit:
            self.flush()
        self._make_room()

    def _sectors(self, sector: int, count: int) -> list[tuple[int, int]]:
        """(block, mask of its sectors) for each block ``count`` sectors from ``sector`` touch."""
        if count <= 0 or sector < 0 or sector + count > self.blocks * SECTORS_PER_BLOCK:
            raise BlockIoError(f"sectors {sector}+{count} lie outside the partition "
                               f"({self.blocks * SECTORS_PER_BLOCK} sectors)")
        out = []
        end = sector + count
        while sector < end:
            b, s = divmod(sector, SECTORS_PER_BLOCK)
            n = min(SECTORS_PER_BLOCK - s, end - sector)
            out.append((b, ((1 << n) - 1) << s))
            sector += n
        return out

    def _valid(self, b: int, mask: int) -> bool:
        """Whether the cache holds sectors ``mask`` of block ``b``."""
        return b in self._cache and self._partial.get(b, FULL) & mask == mask

    # ---- reading ------------------------------------------------------------------------
    def _fetch(self, wanted: list[tuple[int, int]]) -> None:
        """Have sectors ``mask`` of each ``(block, mask)`` in the cache, reading the blocks that
        lack them; BlockIoError if a read fails."""
        while True:
            missing = [b for b, mask in wanted if not self._valid(b, mask)]
            if not missing:
                for b, _ in wanted:
                    self._cache.move_to_end(b)
                return
            self._request_reads([b for b in missing if b not in self._reads])
            waiting = {id(t): t for b in missing if (t := self._reads.get(b)) is not None}
            self._wait()
            failed = [t for t in waiting.values() if t.done and not t.ok]
            if failed:
                raise BlockIoError(f"the block device failed {failed[0]!r}")

    def _request_reads(self, blocks: list[int], must: bool = True) -> None:
        """Send reads for ``blocks`` in runs of consecutive blocks; if the device has no room now,
        leave the rest (``must``: the caller waits and asks again)."""
        for first, count in _runs(sorted(blocks), self._port.max_run):
            t = self._port.start(BlkReqCode.READ, first, count)
            if t is None:
                if must and not self._port.busy:
                    raise BlockIoError("no request id or data slot is free and nothing is in flight")
                return
            self.requests["blk_reads"] += 1
            for b in range(first, first + count):
                self._reads[b] = t

    def _read_ahead(self, first: int, last: int, hit: bool) -> None:
        """Keep the sequential stream a window ahead of its reader: a read that continues the
        stream (touches its last block, its next one, or what is already requested) moves it on;
        a cache miss elsewhere starts a new one; other hits (metadata) leave it alone."""
        if not self._window:
            return
        if self._next >= 0 and self._next - 1 <= last and first <= max(self._ahead, self._next):
            self._next = max(self._next, last + 1)
            if self._ahead - self._next < self._window // 2:
                start, end = max(self._ahead, self._next), min(self.blocks, self._next + self._window)
                self._request_reads([b for b in range(start, end) if not self._valid(b, FULL) and b not in self._reads],
                                    must=False)
                self._ahead = end
        elif not hit:
            self._next = self._ahead = last + 1

    def read_uncached(self, extents: Iterable[tuple[int, memoryview]]) -> None:
        """Read each ``(partition byte offset, destination)`` straight from the device into the
        destination, past the cache (for bulk file data: one copy, out of the data region), in
        requests of up to ``max_run`` blocks, as many in flight as the device takes. Blocks the
        cache holds newer than the disk are written first. Returns when every request is
        answered; BlockIoError if one failed (the destinations then hold some of the data)."""
        pieces = []
        for at, into in extents:
            end = at + len(into)
            for first in range(at // BLK_TRANSFER_SIZE, -(-end // BLK_TRANSFER_SIZE), self._port.max_run):
                lo, hi = max(at, first * BLK_TRANSFER_SIZE), min(end, (first + self._port.max_run) * BLK_TRANSFER_SIZE)
                pieces.append((first, -(-hi // BLK_TRANSFER_SIZE) - first, into[lo - at:hi - at], lo % BLK_TRANSFER_SIZE))
        beyond = [(first, count) for first, count, _, _ in pieces if first + count > self.blocks]
        if beyond:
            raise BlockIoError(f"blocks {beyond[0][0]}+{beyond[0][1]} lie outside the partition ({self.blocks} blocks)")
        self._settle(pieces)
        started: list[Transfer] = []
        todo = deque(pieces)
        while todo or not all(t.done for t in started):
            while todo:
                first, count, into, skip = todo[0]
                t = self._port.start(BlkReqCode.READ, first, count, into=into, skip=skip)
                if t is None:
                    break
                todo.popleft()
                started.append(t)
                self.requests["blk_reads_uncached"] += 1
            if todo and not self._port.busy:
                raise BlockIoError("no request id or data slot is free and nothing is in flight")
            self._wait()
        failed = [t for t in started if not t.ok]
        if failed:
            raise BlockIoError(f"the block device failed {failed[0]!r}")

    def _settle(self, pieces: list[tuple[int, int, memoryview, int]]) -> None:
        """Until the disk holds what the cache does in the blocks ``pieces`` cover: those dirty
        are sent, and writes in flight to them are waited for."""
        def touched(blocks: Iterable[int]) -> bool:
            return any(first <= b < first + count for b in blocks for first, count, _, _ in pieces)
        if touched(self._dirty):
            self.flush()
        while touched(self._writes):
            self._wait()

    # ---- writing ------------------------------------------------------------------------
    def take_sent(self) -> list[Transfer]:
        """The writes sent since last asked (by :meth:`flush`, or when dirty blocks piled up)."""
        sent, self._sent = self._sent, []
        return sent

    def flush(self) -> list[Transfer]:
        """Send every dirty block, in runs of consecutive blocks; the transfers sent (not waited for)."""
        sent: list[Transfer] = []
        self._fetch([(b, FULL) for b in self._dirty if b in self._partial])  # their unwritten sectors
        while self._dirty:
            ready = sorted(b for b in self._dirty if b not in self._writes)
            for first, count in _runs(ready, self._port.max_run):
                payload = b"".join(self._cache[b] for b in range(first, first + count))
                t = self._port.start(BlkReqCode.WRITE, first, count, payload)
                if t is None:
                    break
                self.requests["blk_writes"] += 1
                sent.append(t)
                self._sent.append(t)
                for b in range(first, first + count):
                    self._writes[b] = t
                    self._dirty.discard(b)
            if self._dirty:
                if not self._port.busy:
                    raise BlockIoError("no request id or data slot is free and nothing is in flight")
                self._wait()  # for a write of the same block, or for room
        return sent

    def sync(self) -> None:
        """Everything written so far on the device and FLUSHed: send the dirty blocks, wait for
        every write in flight, then FLUSH and wait; BlockIoError if any of it failed."""
        sent = self.flush()
        while self._writes:
            self._wait()
        if any(not t.ok for t in sent):
            raise BlockIoError("the block device failed a write")
        flush = self._port.start(BlkReqCode.FLUSH, 0, 0)
        while flush is None:
            self._wait()
            flush = self._port.start(BlkReqCode.FLUSH, 0, 0)
        self.requests["blk_flushes"] += 1
        while not flush.done:
            self._wait()
        if not flush.ok:
            raise BlockIoError("the block device failed a FLUSH")

    def drop(self) -> None:
        """Forget everything cached, dirty blocks too, once nothing is in flight (after a failure:
        what the cache holds may not be what the disk holds)."""
        while self._port.busy:
            self._wait()
        self._cache.clear()
        self._dirty.clear()
        self._partial.clear()
        self._next = self._ahead = -1

    # ---- room ---------------------------------------------------------------------------
    def _evict(self) -> None:
        """Drop least recently used clean blocks with no write in flight while over the limit."""
        excess = len(self._cache) - self._limit
        if excess <= 0:
            return
        victims = []
        for b in self._cache:
            if b not in self._dirty and b not in self._writes:
                victims.append(b)
                if len(victims) == excess:
                    break
        for b in victims:
            del self._cache[b]

    def _make_room(self) -> None:
        """Bound the cache: when dirty blocks and writes in flight hold it over twice its limit,
        send them and wait until enough are written to evict."""
        while len(self._cache) > 2 * self._limit:
            self.flush()
            self._wait()
            self._evict()


def _runs(blocks: list[int], longest: int) -> list[tuple[int, int]]:
    """(first, count) runs of consecutive numbers in sorted ``blocks``, each at most ``longest``."""
    runs: list[tuple[int, int]] = []
    for b in blocks:
        if runs and runs[-1][0] + runs[-1][1] == b and runs[-1][1] < longest:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    return runs
