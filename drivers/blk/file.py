"""Block driver: serves a disk image file (or a host block device) through sDDF's block queues.

The monitor opens the image (irq source ``blk:PATH``, read-only with ``access=ro``) and hands
the driver its fd. READ and WRITE move data straight between the file and the data region the
request names by io address (``os.preadv``/``os.pwritev`` into the shared mapping: no copy);
FLUSH is ``fdatasync``. Up to ``io_threads`` requests run at once on a thread pool, which
raises the device's irq through an eventfd as requests finish; with ``io_threads=0`` requests run
in the handler (deterministic, for the in-process test bench). FLUSH and BARRIER order the
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
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from sddf.blk.config import BlkDriverConfig
from sddf.blk.queue import (BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, BlkStorageInfo, ReqConsumer, RespProducer,
                            set_not_ready, write_storage_info)
from sddf.component import Component

BLKGETSIZE64 = 0x80081272
SECTOR_SIZE = 512
ORDERING = (BlkReqCode.FLUSH, BlkReqCode.BARRIER)


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
        self._regions = [(d.io_addr, d.io_addr + d.size, self.regions[d.map]) for d in cfg.data]
        req, resp, capacity = cfg.virt.views(self.regions)
        self._requests = ReqConsumer(f"{self.name}:req", req, capacity)
        self._responses = RespProducer(f"{self.name}:resp", resp, capacity)
        self.ledger.track(self._requests, self._responses)
        self.ledger.require(capacity, "one per request the driver can hold")
        self._free_slots = [i for i, word in enumerate(self.ledger.words) if not word][::-1]
        self._waiting: deque[tuple[int, tuple]] = deque()  # (slot, request) taken, not started
        self._running = 0
        #: finished requests: (slot, status, success_count, whether it was running)
        self._done: deque[tuple[int, int, int, bool]] = deque()
        self._unsent: deque[tuple[int, int, int, int]] = deque()  # (status, success_count, id, slot)
        self._pool: ThreadPoolExecutor | None = None
        if cfg.io_threads:
            self._irq = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.raise_irq_from(cfg.device, self._irq)
            self._pool = ThreadPoolExecutor(cfg.io_threads, thread_name_prefix=f"{self.name}-io")
        info = self.regions[cfg.virt.storage_info]
        if not self.ledger.fresh:
            set_not_ready(info)  # the device went away and is back: the virtualiser reads its table again
        for slot, word in enumerate(self.ledger.words):
            if word:  # taken by the instance before us, never answered: its I/O may or may not have run
                self._done.append((slot, BlkRespStatus.ERR_IO, 0, False))
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
            os.eventfd_read(self._irq)
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
        for request in self._requests.dequeue_many(len(self._free_slots)):
            slot = self._free_slots.pop()
            self.ledger.set(slot, request[4] + 1)
            self._waiting.append((slot, request))

    def _start(self) -> None:
        """Start waiting requests in order; a FLUSH or BARRIER waits for all before it to finish,
        and holds back all after it until it has finished."""
        while self._waiting:
            slot, (code, io_addr, block, count, _rid) = self._waiting[0]
            if code in ORDERING and self._running:
                return
            self._waiting.popleft()
            problem = self._check(code, io_addr, block, count)
            if problem is not None:
                self.counters[f"invalid.{problem}"] += 1
                self._done.append((slot, BlkRespStatus.ERR_INVALID_PARAM, 0, False))
                continue
            if code == BlkReqCode.BARRIER:
                self._done.append((slot, BlkRespStatus.OK, 0, False))
                continue
            job = self._job(code, io_addr, block, count)
            self._running += 1
            if self._pool is None:
                self._finished(slot, job)
            else:
                self._pool.submit(self._finished, slot, job)
            if code in ORDERING:
                return

    def _check(self, code: int, io_addr: int, block: int, count: int) -> str | None:
        """Why a request is invalid (None if it is not)."""
        if code > max(BlkReqCode):
            return "code"
        if code in ORDERING:
            return None
        if count <= 0:
            return "count"
        if block + count > self._blocks:
            return "range"
        if self._data(io_addr, count) is None:
            return "data"
        if code == BlkReqCode.WRITE and self._read_only:
            return "read_only"
        return None

    def _data(self, io_addr: int, count: int) -> memoryview | None:
        """The piece of a data region a request's io address and count name (None if outside all)."""
        end = io_addr + count * BLK_TRANSFER_SIZE
        for base, limit, view in self._regions:
            if base <= io_addr and end <= limit:
                return view[io_addr - base:end - base]
        return None

    def _job(self, code: int, io_addr: int, block: int, count: int) -> Callable[[], tuple[int, int]]:
        """The I/O of a valid request: returns (status, transfers done)."""
        fd, offset = self._fd, block * BLK_TRANSFER_SIZE
        if code == BlkReqCode.FLUSH:
            return lambda: _sync(fd)
        data = self._data(io_addr, count)
        assert data is not None
        move = os.preadv if code == BlkReqCode.READ else os.pwritev
        return lambda: _transfer(move, fd, data, offset)

    def _finished(self, slot: int, job: Callable[[], tuple[int, int]]) -> None:
        """Run a request's I/O (on a pool thread, or inline) and hand its result to the loop."""
        status, done = job()
        self._done.append((slot, status, done, True))
        if self._pool is not None:
            os.eventfd_write(self._irq, 1)

    # ---- responses ------------------------------------------------------------------------
    def _answer(self) -> None:
        """Queue the answers of finished requests (those the virtualiser has no room for wait),
        freeing their slots in the same commit; start what a FLUSH or BARRIER held back once
        nothing runs; notify the virtualiser."""
        words = self.ledger.words
        while True:
            while self._done:
                slot, status, done, ran = self._done.popleft()
                self._running -= ran
                self._unsent.append((status, done, words[slot] - 1, slot))
            if self._running or not self._waiting:
                break
            self._start()  # inline I/O finishes at once; with threads this returns and the irq comes later
        sent = 0
        while self._unsent:
            status, done, rid, slot = self._unsent[0]
            if not self._responses.enqueue((status, done, rid)):
                break
            self._unsent.popleft()
            self.ledger.set(slot, 0)
            self._free_slots.append(slot)
            self.counters["errors" if status else "ok"] += 1
            sent += 1
        if sent:
            self.deferred_notify(self.config.virt.channel)


def _transfer(move: Callable[[int, list, int], int], fd: int, data: memoryview, offset: int) -> tuple[int, int]:
    """Read or write all of ``data`` at ``offset`` (going on after short transfers)."""
    done = 0
    try:
        while done < len(data):
            moved = move(fd, [data[done:]], offset + done)
            if moved <= 0:  # end of an image that shrank underneath
                return BlkRespStatus.ERR_IO, done // BLK_TRANSFER_SIZE
            done += moved
    except OSError:
        return BlkRespStatus.ERR_IO, done // BLK_TRANSFER_SIZE
    return BlkRespStatus.OK, done // BLK_TRANSFER_SIZE


def _sync(fd: int) -> tuple[int, int]:
    try:
        os.fdatasync(fd)
    except OSError:
        return BlkRespStatus.ERR_IO, 0
    return BlkRespStatus.OK, 0
