"""Block virtualiser: gives each client one partition of the disk, and serves clients fairly.

sDDF's blk virt (blk/components/virt.c, partitioning.c). Once the driver's storage info is ready
it reads the partition table through the driver into its own data region (MBR or GPT with
sDDF's checks: :mod:`sddf.blk.partitions`), gives client ``i`` its configured partition and
publishes that client's storage info (capacity in 4 KiB blocks, the rest from the driver's;
``ready`` last). A client whose partition does not exist or cannot be used (misaligned, see
:meth:`PartitionTable.refusal`), or every client if the table cannot be read, is told why in the
log and stays not ready — as in sDDF, which then serves no client at all; here the others go
on — and any request it sends anyway is answered ERR_INVALID_PARAM.

Each client request is checked: a known code; for READ and WRITE a count > 0, blocks inside
the client's partition, a data offset aligned to 4096 with all its data inside the client's
data region. A bad one is answered at once with ERR_INVALID_PARAM and its id, and never reaches
the driver. A good one goes zero-copy: io address = the client data region's io address +
offset, block + the partition's first block, its id re-tagged as a driver id (a slot of an
allocator as large as the driver's queue, at most sDDF's 1024). FLUSH and BARRIER pass as they
are (io address, block and count 0). Responses are mapped back to (client, client id); one whose
id the virtualiser has no request under is refused and counted, never forwarded; an unknown
status becomes ERR_UNSPEC and a READ's or WRITE's success_count over its count is cut to it
(both counted). Block queues carry no signal flags: the driver is notified after requests are
queued, each client after it got responses.

Nothing is dropped: a request is taken from a client's queue only when a driver id is free, the
driver's queue has room (it has while the driver answers only what it took: there are no more
ids than queue slots) and the client's response queue has room for its answer beyond every
answer already owed to it (so sDDF's "the response queue is never full" holds even for a client
that floods); otherwise it stays queued. Clients are served round-robin with at most ``TURN``
requests each per turn; a round stops where ids (or driver queue slots) run out and the next one
resumes after the last client that got something (a client that got nothing keeps its place at
the head). So clients waiting for ids take turns at them, and one client flooding good or bad
requests cannot starve another (sDDF starts at client 0 every time, so every id freed goes to
client 0 while it has requests). With sdfgen's sizing (the driver's queue as large as the
clients' together, each client owed at most its capacity) ids run out only past 1024 requests
in flight.

The driver's storage info is looked at on every pass: when it is taken back (or changes), every
client is made not ready and no new request goes to the driver (requests stay queued); when it is
ready again the table is read again, clients are published again and served. Responses go on
being passed back meanwhile (the driver answers what it had taken), each once.

The ledger holds one word per driver id: ``IN_USE | count << 47 | client << 32 | client id``
for a client request at the driver, ``TABLE_READ`` for the virtualiser's own read of the table,
0 when free — committed with the queue moves of the same pass, so a restarted virtualiser maps
every response the driver still owes. It reads the table again (after its predecessor's table
reads are answered: they land in the same data region).
"""
from __future__ import annotations

from collections import deque
from typing import Any

from sddf.blk.config import BlkVirtClient, BlkVirtConfig
from sddf.blk.partitions import PartitionTable, TableError, TableReader
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, BlkStorageInfo, ReqConsumer, ReqProducer,
                            RespConsumer, RespProducer, StorageInfoReader, set_not_ready, write_storage_info)
from sddf.component import Component

#: sDDF's id allocator size (DRIVER_MAX_NUM_BUFFERS)
MAX_SLOTS = 1024
#: requests a client may have taken per turn
TURN = 32
#: driver responses handled per pass before the notifies
RESPONSE_BATCH = 64
#: times a table read failing with an I/O error is tried again before the table counts as unreadable
TABLE_READ_TRIES = 3

IN_USE = 1 << 63
TABLE_READ = 1 << 62
COUNT_SHIFT, CLIENT_SHIFT = 47, 32
MAX_CLIENTS = 1 << (COUNT_SHIFT - CLIENT_SHIFT)
ID_MASK, CLIENT_MASK, COUNT_MASK = (1 << 32) - 1, MAX_CLIENTS - 1, 0xFFFF

READ, WRITE, FLUSH, BARRIER = BlkReqCode.READ, BlkReqCode.WRITE, BlkReqCode.FLUSH, BlkReqCode.BARRIER
MOVES_DATA = (READ, WRITE)
LAST_CODE, LAST_STATUS = max(BlkReqCode), max(BlkRespStatus)
UNREADY = object()  # the driver's storage info before the first look


class _Client:
    """One client: its queue ends, storage info, data region and partition (once known)."""

    def __init__(self, virt: "BlkVirt", index: int, port: BlkVirtClient) -> None:
        self.name, self.index, self.partition = port.name, index, port.partition
        self.channel = port.queues.channel
        req, resp, capacity = port.queues.views(virt.regions)
        self.requests = ReqConsumer(f"{port.name}.blk_req", req, capacity, on_refuse=virt.refuse)
        self.responses = RespProducer(f"{port.name}.blk_resp", resp, capacity, on_refuse=virt.refuse)
        self.info = virt.regions[port.queues.storage_info]
        self.io_addr, self.data_size = port.data.io_addr, port.data.size
        self.first_block = 0
        self.blocks: int | None = None  # None: no usable partition
        self.why_not = "the partition table has not been read yet"
        self.owed = 0  # requests at the driver (each will be answered on our response queue)

    def problem(self, code: int, offset: int, block: int, count: int) -> str | None:
        """Why a request is invalid, or None."""
        if code > LAST_CODE:
            return f"has unknown code {code}"
        if self.blocks is None:
            return f"cannot be served: {self.why_not}"
        if code not in MOVES_DATA:
            return None
        if count == 0:
            return "asks for 0 blocks"
        if block + count > self.blocks:
            return f"asks for blocks {block}..{block + count - 1}, outside its partition of {self.blocks} blocks"
        if offset % BLK_TRANSFER_SIZE:
            return f"names data offset {offset:#x}, not a multiple of {BLK_TRANSFER_SIZE}"
        if offset + count * BLK_TRANSFER_SIZE > self.data_size:
            return (f"names data [{offset:#x}, {offset + count * BLK_TRANSFER_SIZE:#x}), outside its "
                    f"{self.data_size:#x}-byte data region")
        return None

    def for_driver(self, code: int, offset: int, block: int, count: int, slot: int) -> tuple[int, int, int, int, int]:
        """The driver's request for a valid client request, under driver id ``slot``."""
        if code in MOVES_DATA:
            return code, self.io_addr + offset, self.first_block + block, count, slot
        return code, 0, 0, 0, slot


class BlkVirt(Component):
    """The block virtualiser; see the module docstring."""

    kind = "blk.virt"
    Config = BlkVirtConfig

    def init(self) -> None:
        cfg: BlkVirtConfig = self.config
        if len(cfg.clients) > MAX_CLIENTS:
            raise ValueError(f"{len(cfg.clients)} block clients: the virtualiser serves at most {MAX_CLIENTS}")
        req, resp, capacity = cfg.driver.views(self.regions)
        self.driver_requests = ReqProducer("driver.blk_req", req, capacity)
        # statuses are checked here, per response, so one bad status does not stall the queue
        self.driver_responses = RespConsumer("driver.blk_resp", resp, capacity, validate=None)
        self.driver_info = StorageInfoReader(self.regions[cfg.driver.storage_info])
        self.data = self.regions[cfg.data.map]
        self.clients = [_Client(self, i, port) for i, port in enumerate(cfg.clients)]
        self.ledger.track(self.driver_requests, self.driver_responses,
                          *(end for c in self.clients for end in (c.requests, c.responses)))
        self.slots = min(capacity, MAX_SLOTS)
        self.ledger.require(self.slots, "one per driver request id")
        words = self.ledger.words
        self.free = deque(slot for slot in range(self.slots) if not words[slot])
        for slot in range(self.slots):
            if words[slot] & IN_USE:
                self.clients[(words[slot] >> CLIENT_SHIFT) & CLIENT_MASK].owed += 1
        self.table_reads_out = sum(1 for slot in range(self.slots) if words[slot] == TABLE_READ)
        self.device: Any = UNREADY  # the driver's storage info as last seen
        self.reader: TableReader | None = None
        self.table_read: tuple[int, int] | None = None  # (slot, first block) of our read at the driver
        self.table_tries = 0
        self.serving = False  # the table is known (read, or found unreadable)
        self.turn = 0  # the client the next round starts with
        self.to_notify: set[int] = set()
        self.wake_peers(cfg.driver.channel, *(c.channel for c in self.clients))
        self._work()

    def notified(self, ch: int) -> None:
        self._work()

    def _work(self) -> None:
        """Passes until one moves nothing: look at the driver, pass responses back, serve a round
        of clients (or read the table), then notify whoever got something."""
        while True:
            self._look_at_driver()
            moved = self._responses()
            if self.serving:
                moved += self._serve_round()
            else:
                moved += self._read_table()
            for ch in sorted(self.to_notify):
                self.notify(ch)  # the first commits the whole pass (the ledger rule)
            self.to_notify.clear()
            if not moved:
                return

    # ---- the driver's storage info ------------------------------------------------------------
    def _look_at_driver(self) -> None:
        """Follow the driver's storage info: taken back or changed → withdraw every client's;
        (ready again) → read the table again."""
        info = self.driver_info.read()
        if info is not None and self.driver_info.read() != info:
            info = None  # being rewritten: the driver notifies us once it is ready again
        if info == self.device:
            return
        if info is None and self.device is not UNREADY:
            self.log("the driver took its storage info back: clients are not ready until it is ready again")
        self.device = info
        self.serving, self.reader, self.table_read = False, None, None
        for c in self.clients:
            set_not_ready(c.info)
            c.blocks, c.why_not = None, "the driver is not ready"
        if info is None:
            return
        self.counters["table_reads"] += 1
        self.table_tries = 0
        try:
            self.reader = TableReader(info.capacity * BLK_TRANSFER_SIZE, info.sector_size, len(self.data))
        except (TableError, ValueError) as exc:
            self._unreadable(str(exc))

    # ---- the partition table ------------------------------------------------------------------
    def _read_table(self) -> int:
        """Queue the read the table reader needs next (once an id is free and no read of ours is
        outstanding); return 1 if one was queued."""
        if (self.reader is None or self.table_read is not None or self.table_reads_out or not self.free
                or self.driver_requests.full()):
            return 0
        need = self.reader.need()
        assert need is not None
        first, count = need.blocks()
        slot = self.free.popleft()
        self.ledger.set(slot, TABLE_READ)
        self.table_reads_out += 1
        self.table_read = slot, first
        self.driver_requests.enqueue((READ, self.config.data.io_addr, first, count, slot))
        self.to_notify.add(self.config.driver.channel)
        return 1

    def _table_answered(self, slot: int, status: int) -> None:
        self.table_reads_out -= 1
        if self.table_read is None or self.table_read[0] != slot or self.reader is None:
            return  # a read of a table since forgotten (the driver went away, or our predecessor's)
        first = self.table_read[1]
        self.table_read = None
        if status != BlkRespStatus.OK:
            self.table_tries += 1
            if self.table_tries >= TABLE_READ_TRIES:
                self._unreadable(f"reading block {first} failed (status {status}) {self.table_tries} times")
            return  # the next pass asks again
        need = self.reader.need()
        assert need is not None
        try:
            self.reader.feed(first * BLK_TRANSFER_SIZE, bytes(self.data[:need.blocks()[1] * BLK_TRANSFER_SIZE]))
        except TableError as exc:
            self._unreadable(str(exc))
            return
        if self.reader.table is not None:
            self._publish(self.reader.table)

    def _unreadable(self, why: str) -> None:
        self.log(f"cannot use the disk's partition table: {why}; no client is given a partition")
        self.counters["table_unreadable"] += 1
        self.reader, self.serving = None, True
        for c in self.clients:
            c.why_not = f"the partition table is unusable ({why})"

    def _publish(self, table: PartitionTable) -> None:
        """Give each client its partition and publish its storage info (ready last)."""
        self.reader, self.serving = None, True
        device: BlkStorageInfo = self.device
        self.log(f"{table.scheme.upper()} partition table read: partitions "
                 + (", ".join(f"{i} ({p.size} bytes at byte {p.start})" for i, p in sorted(table.partitions.items()))
                    or "none"))
        for c in self.clients:
            why = table.refusal(c.partition)
            if why is not None:
                c.why_not = why
                self.log(f"client {c.name} (#{c.index}) cannot have partition {c.partition}: {why}; it stays "
                         "not ready and its requests are answered ERR_INVALID_PARAM")
                continue
            p = table.partitions[c.partition]
            c.first_block, c.blocks = p.first_block, p.blocks
            write_storage_info(c.info, device._replace(cylinders=0, heads=0, blocks=0, capacity=p.blocks))
            self.to_notify.add(c.channel)  # a client that looked before it was ready waits for this

    # ---- clients → driver ---------------------------------------------------------------------
    def _serve_round(self) -> int:
        """Give each client a turn, from ``self.turn`` on, until the allocator or the driver's queue
        runs out of room; return the requests taken."""
        n, taken, start = len(self.clients), 0, self.turn
        room = self.driver_requests.free_slots()
        for k in range(n):
            c = self.clients[(start + k) % n]
            got, room, blocked = self._take(c, room)
            taken += got
            self.turn = c.index if blocked and not got else (c.index + 1) % n
            if blocked:
                break
        return taken

    def _take(self, c: _Client, room: int) -> tuple[int, int, bool]:
        """Take up to ``TURN`` of ``c``'s requests: answer bad ones, forward good ones while the
        allocator has ids and the driver's queue ``room``. Returns (taken, room left, whether it
        stopped for want of either)."""
        answerable = c.responses.free_slots() - c.owed
        if answerable <= 0:
            return 0, room, False
        requests = c.requests.peek_many(min(TURN, answerable))
        forward, answers, blocked = [], [], False
        words_set = self.ledger.set
        for code, offset, block, count, rid in requests:
            why = c.problem(code, offset, block, count)
            if why is not None:
                self.refuse(f"{c.name}.invalid_requests",
                            f"client {c.name} request id={rid} {why}: answered ERR_INVALID_PARAM")
                answers.append((BlkRespStatus.ERR_INVALID_PARAM, 0, rid))
                continue
            if not self.free or not room:
                blocked = True
                break
            slot = self.free.popleft()
            words_set(slot, IN_USE | (count if code in MOVES_DATA else 0) << COUNT_SHIFT
                      | c.index << CLIENT_SHIFT | rid)
            forward.append(c.for_driver(code, offset, block, count, slot))
            room -= 1
        c.requests.release(len(forward) + len(answers))
        if forward:
            self.driver_requests.enqueue_many(forward)
            c.owed += len(forward)
            self.counters["requests"] += len(forward)
            self.to_notify.add(self.config.driver.channel)
        if answers:
            self._answer(c, answers)
        return len(forward) + len(answers), room, blocked

    # ---- driver → clients ---------------------------------------------------------------------
    def _responses(self) -> int:
        """Pass a batch of the driver's responses back to the clients; return how many."""
        batch = self.driver_responses.dequeue_many(RESPONSE_BATCH)
        if not batch:
            return 0
        words, out = self.ledger.words, {}
        for status, done, slot in batch:
            word = words[slot] if slot < self.slots else 0
            if word == TABLE_READ:
                self._free(slot)
                self._table_answered(slot, status)
            elif word & IN_USE:
                self._free(slot)
                c = self.clients[(word >> CLIENT_SHIFT) & CLIENT_MASK]
                c.owed -= 1
                out.setdefault(c, []).append(self._checked(status, done, (word >> COUNT_SHIFT) & COUNT_MASK,
                                                           word & ID_MASK))
            else:
                self.refuse("driver.unknown_responses",
                            f"the driver answered id {slot} (status {status}), under which the virtualiser has "
                            "no request outstanding: dropped")
        for c, answers in out.items():
            self._answer(c, answers)
        return len(batch)

    def _checked(self, status: int, done: int, count: int, rid: int) -> tuple[int, int, int]:
        """A client's response from the driver's, with what cannot be true corrected (and counted)."""
        if status > LAST_STATUS:
            self.refuse("driver.bad_status", f"the driver answered a request with unknown status {status}: "
                                             "passed on as ERR_UNSPEC")
            status = BlkRespStatus.ERR_UNSPEC
        if count and done > count:  # (FLUSH and BARRIER are kept with count 0: not checked)
            self.refuse("driver.bad_success_count", f"the driver claims {done} blocks done of a request for "
                                                    f"{count}: passed on as {count}")
            done = count
        return status, done, rid

    def _free(self, slot: int) -> None:
        self.ledger.set(slot, 0)
        self.free.append(slot)  # reused last: a late duplicate answer is less likely to hit a new request

    def _answer(self, c: _Client, answers: list[tuple[int, int, int]]) -> None:
        sent = c.responses.enqueue_many(answers)
        if sent < len(answers):  # only if the client broke its queue (room was kept for every answer)
            self.refuse(f"{c.name}.lost_responses", f"client {c.name}'s response queue had no room for "
                                                    f"{len(answers) - sent} answers: it broke its queue")
        self.counters["responses"] += sent
        self.to_notify.add(c.channel)
