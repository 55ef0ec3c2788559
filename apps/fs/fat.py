"""The FAT file-system server (LionsOS's components/fs/fat): one FAT partition, one client.

It is a block client of its partition (through the block virtualiser) and serves its client
through the LionsOS fs protocol (:mod:`sddf.fs.protocol`): commands in, completions out, paths
and data in the share region.

Design (LionsOS's): the event loop takes commands, hands block responses to the cache and posts
completions; a cothread (:mod:`sddf.fs.cothread`) runs the commands one after another through
FatFs, whose disk callbacks wait for block responses by handing control back to the loop. One
cothread, because FatFs is built without re-entrancy: two calls in flight on one volume would
share its sector window. Block I/O still overlaps: the cache (:mod:`.blockcache`) reads ahead of
a sequential reader, and sends a command's writes together without waiting; the command's
completion is posted when they are answered, while the next command already runs. A block
failure (ERR_IO, or anything but OK) answers the command with ERROR, never a hang.

Every share-region buffer a command names is checked to lie inside the region (INVALID_BUFFER);
paths are copied out of it and checked (INVALID_PATH: empty, longer than 4095 bytes, holding a
NUL; INVALID_NAME: a component over 255 bytes, or not spellable in FatFs's code page); fds are
checked (INVALID_FD); an unknown command is INVALID_COMMAND. A bad command never stops the server.

The FAT library is ChaN's FatFs (the library LionsOS's server links), in our own cffi build
(sddf/fs/_fatfs_build.py; :mod:`.fatdisk` serves its disk callbacks, :mod:`.volume` makes the
calls). pyfatfs was measured against it first (see git history): it parses the whole FAT into a
dict at mount and serialises all of it on every allocation, 30–60× slower at metadata work (100
small files: 443 ms against 12 ms). The ``fatfs-ng`` Cython binding of FatFs was used before this
build, and capped file reads near 50–80 MB/s: its disk callback copied each sector into FatFs's
buffer in a loop (about 15 ns a byte), and FatFs calls the disk once per run of sectors inside a
cluster (2–4 KiB) — 74% of the server's CPU went on those calls and their cothread switches.

So reads go two ways. FatFs serves metadata, small reads and every read of a file open for
writing, its callbacks moving sectors with ``memmove`` (one copy: block cache → client's
buffer). A read of at least 64 KiB of a file open read-only goes past FatFs: FatFs's fast-seek
link map (made at open; the file cannot change while open) gives the file's cluster runs, and
the runs are read with multi-block READs, several in flight, straight into the block data
region and copied once into the share region (blocks the cache holds newer than the disk are
written first). bench/blk.py, a file read once in 1 MiB FILE_READs through the whole system in
processes (load → this server → blk_virt → blk_driver), page cache dropped, ÷ pyfatfs reading it
on the image in one process:

===============================  ============================  ===========================
                                 32 MiB file (--quick)          128 MiB file (3 runs)
===============================  ============================  ===========================
fatfs-ng                         51 MB/s, 0.06×; 20 ms CPU/MiB
cffi FatFs + direct reads        312–505 MB/s, 0.4–0.6×;        570–660 MB/s, 0.71–0.98×
                                 1.3–1.7 ms CPU/MiB
===============================  ============================  ===========================

What is left is latency, not CPU: each FILE_READ waits for its own block reads (the client
sends the next one only then), while pyfatfs has the kernel's read-ahead.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from sddf.apps.fs.blockcache import BlockCache, BlockIoError, BlockPort, Transfer
from sddf.apps.fs.volume import DiskFailed, Volume, fat_path
from sddf.blk.client import BlkClient
from sddf.blk.queue import BlkReqCode, BlkStorageInfo
from sddf.component import Component
from sddf.fs.config import FatServerConfig
from sddf.fs.cothread import Cothread
from sddf.fs.protocol import (MAX_PATH, QUEUE_CAPACITY, STAT_SIZE, Command, Completion, FsBuffer, FsCommand,
                              FsQueueConsumer, FsQueueProducer, FsStatus, decode_command, encode_completion,
                              encode_stat)


class Refused(Exception):
    """A command's params are bad: it is answered with ``status``."""

    def __init__(self, status: FsStatus) -> None:
        super().__init__(status.name)
        self.status = status


class FatServer(Component):
    """Serves one client a FAT partition; see the module docstring."""

    kind = "fs.server"
    Config = FatServerConfig

    def init(self) -> None:
        cfg = self.config
        self._blk = BlkClient(self.name, self.regions, cfg.blk, self.refuse)
        self._port = BlockPort(self._blk, self.regions[cfg.blk.data.map])
        commands, completions, self._share = cfg.client.views(self.regions)
        self._commands = FsQueueConsumer(f"{self.name}:fs_commands", commands, on_refuse=self.refuse)
        self._completions = FsQueueProducer(f"{self.name}:fs_completions", completions, on_refuse=self.refuse)
        self._client = cfg.client.channel
        self._todo: deque[Command] = deque()  # taken from the queue, not yet run
        self._running = False  # the cothread is in the middle of a command
        self._finished: list[tuple[Completion, list[Transfer]]] = []  # waiting for their writes
        self._unsent: deque[Completion] = deque()  # ready, but the completion queue was full
        self._recover = False  # a write failed: the volume must recover before the next command
        self._cache: BlockCache | None = None
        self._volume: Volume | None = None
        self._worker = Cothread(f"{self.name}-fatfs", self._work)
        self._handlers: dict[FsCommand, Callable[[Any], tuple[FsStatus, int]]] = {
            FsCommand.DEINITIALISE: lambda _p: (self._mounted().unmount(), 0),
            FsCommand.FILE_OPEN: lambda p: self._mounted().open(self._path(p.path), p.flags),
            FsCommand.FILE_CLOSE: lambda p: (self._mounted().close(self._file(p.fd)), 0),
            FsCommand.STAT: self._stat,
            FsCommand.FILE_READ: lambda p: self._mounted().read(self._file(p.fd), p.offset, self._buffer(p.buf)),
            FsCommand.FILE_WRITE: lambda p: self._mounted().write(self._file(p.fd), p.offset, self._buffer(p.buf)),
            FsCommand.FILE_SIZE: lambda p: self._mounted().size(self._file(p.fd)),
            FsCommand.RENAME: lambda p: (self._mounted().rename(self._path(p.old_path), self._path(p.new_path)), 0),
            FsCommand.FILE_REMOVE: lambda p: (self._mounted().remove(self._path(p.path)), 0),
            FsCommand.FILE_TRUNCATE: lambda p: (self._mounted().truncate(self._file(p.fd), p.length), 0),
            FsCommand.DIR_CREATE: lambda p: (self._mounted().mkdir(self._path(p.path)), 0),
            FsCommand.DIR_REMOVE: lambda p: (self._mounted().rmdir(self._path(p.path)), 0),
            FsCommand.DIR_OPEN: lambda p: self._mounted().opendir(self._path(p.path)),
            FsCommand.DIR_CLOSE: lambda p: (self._mounted().closedir(self._dir(p.fd)), 0),
            FsCommand.FILE_SYNC: lambda p: (self._mounted().sync(self._file(p.fd)), 0),
            FsCommand.DIR_READ: self._readdir,
            FsCommand.DIR_SEEK: lambda p: (self._mounted().seekdir(self._dir(p.fd), p.loc), 0),
            FsCommand.DIR_TELL: lambda p: self._mounted().telldir(self._dir(p.fd)),
            FsCommand.DIR_REWIND: lambda p: (self._mounted().rewinddir(self._dir(p.fd)), 0),
        }
        self._serve()

    def notified(self, ch: int) -> None:
        if ch == self._blk.channel:
            done = self._port.completed()
            if self._cache is not None:
                self._cache.completed(done)
        self._serve()

    # ---- the event loop's side ----------------------------------------------------------
    def _serve(self) -> None:
        """Take commands, let the cothread run until it waits, post what is finished; again while
        posting made room for commands still queued."""
        while True:
            self._take()
            if self._todo or self._running:
                self._worker.resume()
            posted = self._post()
            if self._port.submitted:
                self._port.submitted = 0
                self.deferred_notify(self._blk.channel)
            if not (posted and self._commands.pending()):
                return

    def _take(self) -> None:
        """Take commands while fewer than a queue's worth are in our hands or answered and not yet
        taken by the client (back-pressure: then every completion has room when it is ready)."""
        held = len(self._todo) + self._running + len(self._finished) + len(self._unsent)
        held += QUEUE_CAPACITY - self._completions.free()
        if held < QUEUE_CAPACITY:
            self._todo.extend(map(decode_command, self._commands.dequeue_many(QUEUE_CAPACITY - held)))

    def _post(self) -> int:
        """Post the completions whose writes are all answered (ERROR if one failed); how many."""
        waiting = []
        for completion, writes in self._finished:
            if not all(t.done for t in writes):
                waiting.append((completion, writes))
            elif all(t.ok for t in writes):
                self._unsent.append(completion)
            else:
                self.log(f"command {completion.id}: the block device failed a write; answering ERROR")
                self._unsent.append(Completion(completion.id, FsStatus.ERROR, 0))
                self._recover = True
        self._finished = waiting
        posted = self._completions.enqueue_many([encode_completion(c) for c in self._unsent])
        for _ in range(posted):
            self._unsent.popleft()
        if posted:
            self.deferred_notify(self._client)
        return posted

    # ---- the cothread's side ------------------------------------------------------------
    def _work(self) -> None:
        """The cothread: run the commands taken, in order; wait when there are none."""
        while True:
            if not self._todo:
                self._running = False
                self._worker.wait()
                continue
            self._running = True
            command = self._todo.popleft()
            if self._recover and self._volume is not None:
                self._recover = False
                self._volume.recover()
            status, data = self._execute(command)
            writes: list[Transfer] = []
            if self._cache is not None:
                try:
                    self._cache.flush()
                except BlockIoError as exc:  # reading the rest of a block written in part
                    self.log(f"command {command.id}: {exc}; answering ERROR")
                    status, data, self._recover = FsStatus.ERROR, 0, True
                writes = self._cache.take_sent()  # the command's: its completion waits for them
            self._finished.append((Completion(command.id, status, data), writes))
            self.counters["fs_commands"] += 1

    def _execute(self, command: Command) -> tuple[FsStatus, int]:
        if command.params is None:
            self.refuse("fs_unknown_command", f"command id {command.id} has unknown type {command.type}")
            return FsStatus.INVALID_COMMAND, 0
        try:
            if command.type == FsCommand.INITIALISE:
                return self._initialise(), 0
            return self._handlers[command.type](command.params)
        except Refused as refused:
            self.refuse(f"fs_{refused.status.name.lower()}",
                        f"command id {command.id} ({FsCommand(command.type).name}) {command.params}: {refused}")
            return refused.status, 0
        except DiskFailed:
            assert self._volume is not None
            self._volume.recover()
            return FsStatus.ERROR, 0

    def _initialise(self) -> FsStatus:
        """Mount the partition (once its storage info is ready)."""
        if self._volume is not None and self._volume.mounted:
            return FsStatus.SUCCESS
        info = self._blk.storage_info()
        if info is None:
            info = self._await_partition()
            if info is None:
                return FsStatus.ERROR
        if self._cache is None or self._cache.blocks != info.capacity:
            cfg = self.config
            self._cache = BlockCache(self._port, info.capacity, self._worker.wait, cfg.cache_blocks,
                                     cfg.read_ahead_blocks, self.counters)
            self._volume = Volume(self._cache, self.log, cfg.max_open_files)
        assert self._volume is not None
        return self._volume.mount()

    def _await_partition(self) -> BlkStorageInfo | None:
        """Wait for the virtualiser to make the partition ready. It notifies a client only with
        responses, so send it a FLUSH: it holds client requests until it serves clients, which it
        does once it has published their storage info (or answers at once if it cannot give us
        the partition); the storage info is then ready, or will not be."""
        while (probe := self._port.start(BlkReqCode.FLUSH, 0, 0)) is None:
            self._worker.wait()
        while not probe.done:
            self._worker.wait()
        info = self._blk.storage_info()
        if info is None:
            self.log("INITIALISE: the block virtualiser has not made the partition ready (its log says why)")
        return info

    # ---- checking what the client sent --------------------------------------------------
    def _mounted(self) -> Volume:
        if self._volume is None or not self._volume.mounted:
            raise Refused(FsStatus.ERROR)  # not INITIALISEd
        return self._volume

    def _buffer(self, buf: FsBuffer) -> memoryview:
        """The share-region slice ``buf`` names, if it lies inside the region."""
        if buf.offset > len(self._share) or buf.size > len(self._share) - buf.offset:
            raise Refused(FsStatus.INVALID_BUFFER)
        return self._share[buf.offset:buf.offset + buf.size]

    def _path(self, buf: FsBuffer) -> bytes:
        """A private copy of the path ``buf`` names, as FatFs takes it."""
        if buf.size > MAX_PATH:
            raise Refused(FsStatus.INVALID_PATH)
        path = fat_path(bytes(self._buffer(buf)))
        if isinstance(path, FsStatus):
            raise Refused(path)
        return path

    def _file(self, fd: int) -> int:
        if fd not in self._mounted().files.open:
            raise Refused(FsStatus.INVALID_FD)
        return fd

    def _dir(self, fd: int) -> int:
        if fd not in self._mounted().dirs.open:
            raise Refused(FsStatus.INVALID_FD)
        return fd

    # ---- commands with more to check ----------------------------------------------------
    def _stat(self, params: Any) -> tuple[FsStatus, int]:
        out = self._buffer(params.buf)
        if len(out) < STAT_SIZE:
            raise Refused(FsStatus.INVALID_BUFFER)
        status, stat = self._mounted().stat(self._path(params.path))
        if stat is not None:
            out[:STAT_SIZE] = encode_stat(stat)
        return status, 0

    def _readdir(self, params: Any) -> tuple[FsStatus, int]:
        """The next name into the client's buffer; one that does not fit stays for the next DIR_READ."""
        fd, out = self._dir(params.fd), self._buffer(params.buf)
        volume = self._mounted()
        status, name = volume.readdir(fd)
        if status != FsStatus.SUCCESS:
            return status, 0
        if len(name) > len(out):
            volume.unread(fd, name)
            return FsStatus.INVALID_BUFFER, len(name)
        out[:len(name)] = name
        return FsStatus.SUCCESS, len(name)
