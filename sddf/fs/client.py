"""The fs client library: a LionsOS file system used over the fs protocol.

Two layers. :class:`FsClientCore` is sans-I/O: it sends commands (ids of its own), takes
completions and matches each to the command it answers — a completion for an id with no command
outstanding, or with a status the protocol does not have, is refused and counted, never trusted —
and manages the share region (:class:`ShareAllocator`: slices for paths and data). It does not
notify: the component notifies the server when :attr:`FsClientCore.submitted` says so.

:class:`FsClient` makes blocking calls on it (open, read, write, stat, listdir, mkdir, rename,
remove, close, size, truncate, sync, …) for code that runs on a cothread
(:mod:`sddf.fs.cothread`): where a call waits for its completion it calls ``wait()``, and the
component's loop, notified, calls :meth:`FsClientCore.poll` and resumes it. A failed command
raises :class:`FsError` with the protocol's status.
"""
from __future__ import annotations

from contextlib import contextmanager, suppress
from typing import Any, Callable, Iterator, Mapping

from sddf.component import Component
from sddf.fs.config import FsConnection
from sddf.fs.cothread import Cothread
from sddf.fs.protocol import (MAX_NAME, STAT_SIZE, Completion, FsBuffer, FsCommand, FsOpenFlags, FsQueueConsumer,
                              FsQueueProducer, FsStat, FsStatus, decode_completion, decode_stat, encode_command)

ALIGN = 64  # share slices start on cache-line boundaries
CHUNK = 1 << 20  # the most one FILE_READ or FILE_WRITE moves


class FsError(Exception):
    """A command the server answered with a status other than SUCCESS."""

    def __init__(self, command: FsCommand, status: int, what: str = "") -> None:
        name = FsStatus(status).name if status in FsStatus._value2member_map_ else str(status)
        super().__init__(f"{command.name}{' ' + what if what else ''}: {name}")
        self.command, self.status, self.what = command, status, what


class ShareAllocator:
    """First-fit slices of a share region of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = [(0, size)]  # (offset, size), sorted, never adjacent

    def take(self, size: int) -> FsBuffer | None:
        """A slice of ``size`` bytes (at least one), or None if no free run is long enough."""
        need = -(-max(size, 1) // ALIGN) * ALIGN
        for i, (offset, free) in enumerate(self._free):
            if free >= need:
                self._free[i:i + 1] = [(offset + need, free - need)] if free > need else []
                return FsBuffer(offset, size)
        return None

    def give(self, buf: FsBuffer) -> None:
        """Give back a slice :meth:`take` handed out."""
        need = -(-max(buf.size, 1) // ALIGN) * ALIGN
        merged: list[tuple[int, int]] = []
        for offset, size in sorted([*self._free, (buf.offset, need)]):
            if merged and merged[-1][0] + merged[-1][1] == offset:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((offset, size))
        self._free = merged


class FsClientCore:
    """A client's end of an fs connection; see the module docstring."""

    def __init__(self, pd: str, regions: Mapping[str, memoryview], connection: FsConnection,
                 refuse: Callable[[str, object], None]) -> None:
        commands, completions, self.share = connection.views(regions)
        self._commands = FsQueueProducer(f"{pd}:fs_commands", commands)
        self._completions = FsQueueConsumer(f"{pd}:fs_completions", completions, on_refuse=refuse)
        self.refuse = refuse
        self.channel = connection.channel
        self.allocator = ShareAllocator(len(self.share))
        self._next_id = 0
        self.outstanding: dict[int, FsCommand] = {}
        self.results: dict[int, Completion] = {}  # answered, not yet collected
        self.submitted = 0  # commands queued since the component last notified the server

    def submit(self, command: FsCommand, *params: Any) -> int | None:
        """Queue ``command``; its id, or None if the command queue is full."""
        cmd_id = self._next_id
        if not self._commands.enqueue(encode_command(cmd_id, command, *params)):
            return None
        self._next_id += 1
        self.outstanding[cmd_id] = command
        self.submitted += 1
        return cmd_id

    def poll(self) -> None:
        """Take every completion queued into :attr:`results`, refusing those that answer nothing."""
        for message in self._completions.dequeue_many():
            done = decode_completion(message)
            command = self.outstanding.pop(done.id, None)
            if command is None:
                self.refuse("fs_unknown_completion", f"a completion for id {done.id}, which has no command outstanding")
                continue
            if done.status not in FsStatus._value2member_map_:
                self.refuse("fs_unknown_status", f"the completion of {command.name} id {done.id} has unknown "
                                                  f"status {done.status}")
                done = Completion(done.id, FsStatus.ERROR, 0)
            self.results[done.id] = done


class FsClient:
    """Blocking calls over a :class:`FsClientCore`, for code on a cothread; ``wait()`` returns
    after the loop has polled the core."""

    def __init__(self, core: FsClientCore, wait: Callable[[], None]) -> None:
        self.core = core
        self._wait = wait

    # ---- plumbing -----------------------------------------------------------------------
    def call(self, command: FsCommand, *params: Any, what: str = "",
             ok: tuple[FsStatus, ...] = (FsStatus.SUCCESS,)) -> Completion:
        """Send ``command`` and wait for its completion; FsError unless its status is in ``ok``."""
        while (cmd_id := self.core.submit(command, *params)) is None:
            self._wait()
        while cmd_id not in self.core.results:
            self._wait()
        done = self.core.results.pop(cmd_id)
        if done.status not in ok:
            raise FsError(command, done.status, what)
        return done

    def _slice(self, size: int) -> FsBuffer:
        """Share-region room for ``size`` bytes (waiting is no use: only our own calls hold it)."""
        buf = self.core.allocator.take(size)
        if buf is None:
            raise MemoryError(f"the share region ({self.core.allocator.size} bytes) has no {size} bytes free")
        return buf

    def _with_path(self, command: FsCommand, path: str, *params: Any) -> Completion:
        """``command`` with ``path`` put in the share region as its first param."""
        data = path.encode()
        buf = self._slice(len(data))
        try:
            self.core.share[buf.offset:buf.offset + buf.size] = data
            return self.call(command, buf, *params, what=path)
        finally:
            self.core.allocator.give(buf)

    def _chunk(self) -> int:
        return max(1, min(CHUNK, self.core.allocator.size // 4))

    # ---- the file system ----------------------------------------------------------------
    def initialise(self) -> None:
        self.call(FsCommand.INITIALISE)

    def deinitialise(self) -> None:
        self.call(FsCommand.DEINITIALISE)

    def open(self, path: str, flags: int = FsOpenFlags.READ_ONLY) -> int:
        return self._with_path(FsCommand.FILE_OPEN, path, flags).data

    def close(self, fd: int) -> None:
        self.call(FsCommand.FILE_CLOSE, fd)

    def read(self, fd: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        out = bytearray()
        buf = self._slice(min(size, self._chunk()))
        try:
            while len(out) < size:
                want = FsBuffer(buf.offset, min(buf.size, size - len(out)))
                got = self.call(FsCommand.FILE_READ, fd, offset + len(out), want).data
                if got > want.size:
                    self.core.refuse("fs_bad_length", f"FILE_READ of {want.size} bytes answered {got} bytes read")
                    raise FsError(FsCommand.FILE_READ, FsStatus.ERROR, "the server claimed more than asked")
                out += self.core.share[buf.offset:buf.offset + got]
                if got < want.size:
                    break
        finally:
            self.core.allocator.give(buf)
        return bytes(out)

    def write(self, fd: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; the bytes written (fewer if the volume filled)."""
        done = 0
        buf = self._slice(min(max(len(data), 1), self._chunk()))
        try:
            while done < len(data):
                piece = data[done:done + buf.size]
                self.core.share[buf.offset:buf.offset + len(piece)] = piece
                wrote = self.call(FsCommand.FILE_WRITE, fd, offset + done, FsBuffer(buf.offset, len(piece))).data
                done += min(wrote, len(piece))
                if wrote < len(piece):
                    break
        finally:
            self.core.allocator.give(buf)
        return done

    def size(self, fd: int) -> int:
        return self.call(FsCommand.FILE_SIZE, fd).data

    def truncate(self, fd: int, length: int) -> None:
        self.call(FsCommand.FILE_TRUNCATE, fd, length)

    def sync(self, fd: int) -> None:
        self.call(FsCommand.FILE_SYNC, fd)

    def stat(self, path: str) -> FsStat:
        out = self._slice(STAT_SIZE)
        try:
            self._with_path(FsCommand.STAT, path, out)
            return decode_stat(bytes(self.core.share[out.offset:out.offset + STAT_SIZE]))
        finally:
            self.core.allocator.give(out)

    def mkdir(self, path: str) -> None:
        self._with_path(FsCommand.DIR_CREATE, path)

    def rmdir(self, path: str) -> None:
        self._with_path(FsCommand.DIR_REMOVE, path)

    def remove(self, path: str) -> None:
        self._with_path(FsCommand.FILE_REMOVE, path)

    def rename(self, old: str, new: str) -> None:
        data = new.encode()
        buf = self._slice(len(data))
        try:
            self.core.share[buf.offset:buf.offset + buf.size] = data
            self._with_path(FsCommand.RENAME, old, buf)
        finally:
            self.core.allocator.give(buf)

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path``."""
        fd = self._with_path(FsCommand.DIR_OPEN, path).data
        names = []
        buf = self._slice(MAX_NAME)
        try:
            while True:
                done = self.call(FsCommand.DIR_READ, fd, buf, what=path,
                                 ok=(FsStatus.SUCCESS, FsStatus.END_OF_DIRECTORY))
                if done.status == FsStatus.END_OF_DIRECTORY:
                    return names
                if done.data > buf.size:
                    raise FsError(FsCommand.DIR_READ, FsStatus.ERROR, f"{path}: a name longer than its buffer")
                names.append(bytes(self.core.share[buf.offset:buf.offset + done.data]).decode(errors="replace"))
        finally:
            self.core.allocator.give(buf)
            self.call(FsCommand.DIR_CLOSE, fd, what=path)

    # ---- whole files --------------------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        fd = self.open(path)
        with self._closing(fd):
            data = self.read(fd, 0, self.size(fd))
        return data

    def write_file(self, path: str, data: bytes) -> None:
        """Make ``path`` hold exactly ``data`` (created if missing), closed (written back) after."""
        fd = self.open(path, FsOpenFlags.WRITE_ONLY | FsOpenFlags.CREATE)
        with self._closing(fd):
            self.truncate(fd, 0)
            if self.write(fd, 0, data) != len(data):
                raise FsError(FsCommand.FILE_WRITE, FsStatus.ERROR, f"{path}: the volume is full")

    @contextmanager
    def _closing(self, fd: int) -> Iterator[None]:
        """Close ``fd`` after the block; if the block failed, its error is the one raised."""
        try:
            yield
        except BaseException:
            with suppress(FsError):
                self.close(fd)
            raise
        self.close(fd)


class FsClientComponent(Component):
    """A component whose :meth:`body` makes blocking fs calls on ``self.fs``: the body runs on a
    cothread that waits for completions while the loop takes them (what every fs client PD shares)."""

    def init(self) -> None:
        self.fs_core = FsClientCore(self.name, self.regions, self.config.fs, self.refuse)
        self._body = Cothread(f"{self.name}-fs", self.body)
        self.fs = FsClient(self.fs_core, self._body.wait)
        self._step()

    def notified(self, ch: int) -> None:
        self.fs_core.poll()
        self._step()

    def body(self) -> None:
        """What the client does (override)."""
        raise NotImplementedError

    def _step(self) -> None:
        """Let the body run until it waits, then tell the server of what it submitted."""
        self._body.resume()
        if self.fs_core.submitted:
            self.fs_core.submitted = 0
            self.notify(self.fs_core.channel)
