"""Block driver: serves a disk image file (or a host block device) through sDDF's block queues.

The monitor opens the image (irq source ``blk:PATH``, read-only with ``access=ro``) and hands
the driver its fd. READ and WRITE move data straight between the file and the data region the
request names by io address (``pread``/``pwrite`` into the shared mapping: no copy); FLUSH is
``fdatasync``. Up to ``io_threads`` requests run at once on the I/O engine's C threads
(:mod:`sddf.blk.io`), which raise the device's irq through an eventfd as requests finish; with
``io_threads=0`` requests run in the handler (deterministic, for the in-process test bench).
``delay_us`` adds latency to every request (a slower disk). FLUSH and BARRIER order the
queue: nothing after one starts before everything before it has finished (and a FLUSH has
synced). Requests may complete out of order otherwise, as sDDF allows.

Every request taken is answered exactly once, with its id:
- an unknown code, a count of 0, blocks past the end of the image, or data outside every data
  region → ERR_INVALID_PARAM, without touching the image; a WRITE to a read-only image → the
  same (the storage info says ``read_only``);
- a host I/O error, a full disk, or an image that shrank underneath → ERR_IO, with
  ``success_count`` the transfers done before the failure.
The driver's ledger holds the id of every request it has taken and not answered: a restarted
driver answers each of them with ERR_IO (its I/O may or may not have happened) before it
publishes its storage info again, so the virtualiser sees every request answered once.
"""
from __future__ import annotations

import fcntl
import os
import stat
from collections import deque

from sddf.blk import io
from sddf.blk.config import BlkDriverConfig
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, BlkStorageInfo, ReqConsumer, RespProducer,
                            set_not_ready, write_storage_info)
from sddf.component import Component

BLKGETSIZE64 = 0x80081272
SECTOR_SIZE = 512
READ, WRITE, FLUSH, BARRIER = (int(code) for code in BlkReqCode)  # FLUSH and BARRIER order the queue
LAST_CODE = max(BlkReqCode)
OK, ERR_INVALID_PARAM, ERR_IO = (int(status) for status in (BlkRespStatus.OK, BlkRespStatus.ERR_INVALID_PARAM,
                                                             BlkRespStatus.ERR_IO))


def device_bytes(fd: int) -> int:
    """The size of an image file or block device."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return int.from_bytes(fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)), "little")
    return st.st_size


class FileBlkDriver(Component):
    """Answers block requests from an image file; see the module docstring."""

    kind = "blk.driver"
    Config = BlkDriverConfig

    def init(self) -> None:
        cfg = self.config
        self._fd = self.device(cfg.device)
        self._read_only = fcntl.fcntl(self._fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        self._blocks = device_bytes(self._fd) // BLK_TRANSFER_SIZE
        self._regions = [(d.io_addr, d.io_addr + d.size, i) for i, d in enumerate(cfg.data)]
        req, resp, capacity = cfg.virt.views(self.regions)
        self._requests = ReqConsumer(f"{self.name}:req", req, capacity)
        self._responses = RespProducer(f"{self.name}:resp", resp, capacity)
        self.ledger.track(self._requests, self._responses)
        self.ledger.require(capacity, "one per request the driver can hold")
        self._free_slots = [i for i, word in enumerate(self.ledger.words) if not word][::-1]
        self._waiting: deque[tuple[int, tuple]] = deque()  # (slot, request) taken, not started
        self._running = 0  # requests on the I/O threads
        #: requests answered without the threads (invalid, BARRIER, inline I/O): (slot, status, success_count)
        self._done: deque[tuple[int, int, int]] = deque()
        self._unsent: deque[tuple[int, int, int, int]] = deque()  # (status, success_count, id, slot)
        self._io = io.IoEngine(cfg.io_threads, capacity, [self.regions[d.map] for d in cfg.data], cfg.delay_us / 1e6)
        if cfg.io_threads:
            self.raise_irq_from(cfg.device, self._io.eventfd)
        info = self.regions[cfg.virt.storage_info]
        if not self.ledger.fresh:
            set_not_ready(info)  # the device went away and is back: the virtualiser reads its table again
        for slot, word in enumerate(self.ledger.words):
            if word:  # taken by the instance before us, never answered: its I/O may or may not have run
                self._done.append((slot, ERR_IO, 0))
                self.counters["answered_after_restart"] += 1
        self._answer()
        self.ledger.commit()  # those answers are out before the device is ready again
        write_storage_info(info, BlkStorageInfo(
            cfg.serial_number.encode(), self._read_only, SECTOR_SIZE, 1, capacity, 0, 0, 0, self._blocks))
        self.deferred_notify(cfg.virt.channel)  # ready (and any answers) to the virtualiser
        self.notified(cfg.virt.channel)  # what was queued while it was down (its notification died with it)

    def notified(self, ch: int) -> None:
        cfg = self.config
        if ch == cfg.device:
            self._io.acknowledge()
            self.irq_ack(ch)
        elif ch != cfg.virt.channel:
            return
        self._take()
        self._start()
        self._answer()

    # ---- requests -------------------------------------------------------------------------
    def _take(self) -> None:
        """Take as many requests as there are slots to remember them by."""
        if not self._free_slots:
            return
        free, set_word, waiting = self._free_slots, self.ledger.set, self._waiting
        for request in self._requests.dequeue_many(len(free)):
            slot = free.pop()
            set_word(slot, request[4] + 1)
            waiting.append((slot, request))

    def _start(self) -> None:
        """Start waiting requests in order; a FLUSH or BARRIER waits for all before it to finish,
        and holds back all after it until it has finished."""
        waiting, done, engine, fd = self._waiting, self._done, self._io, self._fd
        threaded = self.config.io_threads > 0
        while waiting:
            slot, (code, io_addr, block, count, _rid) = waiting[0]
            if code >= FLUSH and self._running:
                return
            waiting.popleft()
            data = self._data(io_addr, count) if code < FLUSH else (0, 0)
            problem = self._problem(code, data, block, count)
            if problem is not None:
                self.counters[f"invalid.{problem}"] += 1
                done.append((slot, ERR_INVALID_PARAM, 0))
            elif code == BARRIER:
                done.append((slot, OK, 0))
            else:
                job = (slot, code, fd, *data, count * BLK_TRANSFER_SIZE, block * BLK_TRANSFER_SIZE)  # type: ignore[misc]
                if not threaded:
                    done.append(engine.run(*job))
                    continue
                engine.submit(*job)
                self._running += 1
                if code == FLUSH:
                    return

    def _problem(self, code: int, data: tuple[int, int] | None, block: int, count: int) -> str | None:
        """Why a request is invalid (None if it is not); ``data`` is the (region, offset) it names."""
        if code > LAST_CODE:
            return "code"
        if code >= FLUSH:
            return None
        if count <= 0:
            return "count"
        if block + count > self._blocks:
            return "range"
        if data is None:
            return "data"
        if code == WRITE and self._read_only:
            return "read_only"
        return None

    def _data(self, io_addr: int, count: int) -> tuple[int, int] | None:
        """The data region (its index) and offset in it that a request's io address and count name
        (None if outside all)."""
        end = io_addr + count * BLK_TRANSFER_SIZE
        for base, limit, index in self._regions:
            if base <= io_addr and end <= limit:
                return index, io_addr - base
        return None

    # ---- responses ------------------------------------------------------------------------
    def _answer(self) -> None:
        """Queue the answers of finished requests (those the virtualiser has no room for wait),
        freeing their slots in the same commit; start what a FLUSH or BARRIER held back once
        nothing runs; notify the virtualiser."""
        words, unsent, done = self.ledger.words, self._unsent, self._done
        finished = self._io.completions() if self._running else ()
        self._running -= len(finished)
        unsent.extend((status, count, words[slot] - 1, slot) for slot, status, count in finished)
        while True:
            while done:
                slot, status, count = done.popleft()
                unsent.append((status, count, words[slot] - 1, slot))
            if self._running or not self._waiting:
                break
            self._start()  # what a FLUSH or BARRIER held back (inline I/O is done at once)
        if not unsent:
            return
        flat = tuple(field for status, count, rid, _slot in unsent for field in (status, count, rid))
        sent = self._responses.enqueue_flat(flat)
        set_word, free = self.ledger.set, self._free_slots
        errors = 0
        for _ in range(sent):
            status, _count, _rid, slot = unsent.popleft()
            set_word(slot, 0)
            free.append(slot)
            errors += status != OK
        self.counters["ok"] += sent - errors
        if errors:
            self.counters["errors"] += errors
        if sent:
            self.deferred_notify(self.config.virt.channel)
