"""The LionsOS file-system protocol (include/lions/fs/protocol.h): queues, commands, completions.

Byte layout (little-endian, as LionsOS's C compiler lays it out on x86-64):
fs_queue_t  {u64 head @0, u64 tail @8, 48 bytes of padding} then 511 messages of 64 bytes from
            byte 64 (32 KiB in all); free-running u64 indices, slot = index % 511.
fs_cmd_t    {u64 id @0, u64 type @8, 48 bytes of params @16} — the params of each command are
            u64 words in the order of :data:`COMMAND_FIELDS` (an fs_buffer_t is two: offset, size).
fs_cmpl_t   {u64 id @0, u64 status @8, 48 bytes of data @16} — data's first word is the result.
fs_stat_t   17 u64 (:class:`FsStat`).

Ordering: a consumer reads ``tail`` with acquire and publishes ``head`` with release, a producer
the reverse; there are no signal flags (the producer notifies after every publish). Each end keeps
its own index privately and checks every value of the peer's it reads: an index that moved
backwards or by more than the capacity is a :class:`QueueProtocolError` naming the queue.
Everything else here is sans-I/O: encoders and decoders on bytes.
"""
from __future__ import annotations

import struct
from collections import namedtuple
from enum import IntEnum, IntFlag
from typing import Any, Callable, NamedTuple

from sddf import atomic
from sddf.queue.ring import QueueProtocolError

QUEUE_CAPACITY = 511
MSG_SIZE = 64
QUEUE_HEADER = 64
QUEUE_SIZE = QUEUE_HEADER + QUEUE_CAPACITY * MSG_SIZE  # 32 KiB
HEAD_OFFSET, TAIL_OFFSET = 0, 8
PARAM_WORDS = 6  # 48 bytes of params or data
MAX_NAME = 255  # bytes of one path component
MAX_PATH = 4095  # bytes of a whole path
CONNECTION_MAGIC = b"LionsOS\x01"  # what begins a LionsOS connection config
U64 = (1 << 64) - 1
MESSAGE = struct.Struct("<QQ6Q")  # id, type (or status), params (or data)
assert MESSAGE.size == MSG_SIZE

#: what a queue end calls instead of raising on a broken peer: (counter name, what was wrong)
OnRefuse = Callable[[str, str], None]


class FsCommand(IntEnum):
    INITIALISE = 0
    DEINITIALISE = 1
    FILE_OPEN = 2
    FILE_CLOSE = 3
    STAT = 4
    FILE_READ = 5
    FILE_WRITE = 6
    FILE_SIZE = 7
    RENAME = 8
    FILE_REMOVE = 9
    FILE_TRUNCATE = 10
    DIR_CREATE = 11
    DIR_REMOVE = 12
    DIR_OPEN = 13
    DIR_CLOSE = 14
    FILE_SYNC = 15
    DIR_READ = 16
    DIR_SEEK = 17
    DIR_TELL = 18
    DIR_REWIND = 19


class FsStatus(IntEnum):
    SUCCESS = 0
    ERROR = 1
    INVALID_BUFFER = 2
    INVALID_PATH = 3
    INVALID_FD = 4
    ALLOCATION_ERROR = 5
    OUTSTANDING_OPERATIONS = 6
    INVALID_NAME = 7
    TOO_MANY_OPEN_FILES = 8
    SERVER_WAS_DENIED = 9
    INVALID_WRITE = 10
    INVALID_READ = 11
    DIRECTORY_IS_FULL = 12
    INVALID_COMMAND = 13
    END_OF_DIRECTORY = 14
    NO_FILE = 15
    NOT_DIRECTORY = 16
    ALREADY_EXISTS = 17
    NOT_EMPTY = 18


class FsOpenFlags(IntFlag):
    """FILE_OPEN's flags: an access mode (the low two bits) or'ed with CREATE."""

    READ_ONLY = 0
    WRITE_ONLY = 1
    READ_WRITE = 2
    CREATE = 4


ACCESS_MODE_MASK = 3
KNOWN_OPEN_FLAGS = int(ACCESS_MODE_MASK | FsOpenFlags.CREATE)  # an int: ~ of an IntFlag drops unknown bits


class FsBuffer(NamedTuple):
    """A slice of the share region: ``size`` bytes from ``offset``."""

    offset: int
    size: int


#: each command's params in order: (name, kind); kinds are "u64", "i64" and "buf" (an FsBuffer)
COMMAND_FIELDS: dict[FsCommand, tuple[tuple[str, str], ...]] = {
    FsCommand.INITIALISE: (),
    FsCommand.DEINITIALISE: (),
    FsCommand.FILE_OPEN: (("path", "buf"), ("flags", "u64")),
    FsCommand.FILE_CLOSE: (("fd", "u64"),),
    FsCommand.STAT: (("path", "buf"), ("buf", "buf")),
    FsCommand.FILE_READ: (("fd", "u64"), ("offset", "u64"), ("buf", "buf")),
    FsCommand.FILE_WRITE: (("fd", "u64"), ("offset", "u64"), ("buf", "buf")),
    FsCommand.FILE_SIZE: (("fd", "u64"),),
    FsCommand.RENAME: (("old_path", "buf"), ("new_path", "buf")),
    FsCommand.FILE_REMOVE: (("path", "buf"),),
    FsCommand.FILE_TRUNCATE: (("fd", "u64"), ("length", "u64")),
    FsCommand.DIR_CREATE: (("path", "buf"),),
    FsCommand.DIR_REMOVE: (("path", "buf"),),
    FsCommand.DIR_OPEN: (("path", "buf"),),
    FsCommand.DIR_CLOSE: (("fd", "u64"),),
    FsCommand.FILE_SYNC: (("fd", "u64"),),
    FsCommand.DIR_READ: (("fd", "u64"), ("buf", "buf")),
    FsCommand.DIR_SEEK: (("fd", "u64"), ("loc", "i64")),
    FsCommand.DIR_TELL: (("fd", "u64"),),
    FsCommand.DIR_REWIND: (("fd", "u64"),),
}
#: each command's params as a named tuple type (``PARAMS[FsCommand.FILE_READ](fd, offset, buf)``)
PARAMS: dict[FsCommand, type] = {
    cmd: namedtuple("".join(w.capitalize() for w in cmd.name.split("_")) + "Params",  # type: ignore[misc]
                    [name for name, _ in fields])
    for cmd, fields in COMMAND_FIELDS.items()}


class Command(NamedTuple):
    """A decoded command: ``params`` is its PARAMS tuple, or None for an unknown ``type``."""

    id: int
    type: int
    params: Any


class Completion(NamedTuple):
    """A completion: ``data`` is the first word of its data (fd, length, size, location or 0)."""

    id: int
    status: int
    data: int = 0


def encode_command(cmd_id: int, cmd: FsCommand, *params: Any) -> bytes:
    """The 64-byte message of command ``cmd`` with ``params`` in COMMAND_FIELDS order."""
    fields = COMMAND_FIELDS[cmd]
    if len(params) != len(fields):
        raise ValueError(f"{cmd.name} takes {len(fields)} params ({', '.join(n for n, _ in fields)}), "
                         f"not {len(params)}")
    words: list[int] = []
    for (name, kind), value in zip(fields, params):
        parts = tuple(FsBuffer(*value)) if kind == "buf" else (value & U64 if kind == "i64" else value,)
        for part in parts:
            if not isinstance(part, int) or not 0 <= part <= U64:
                raise ValueError(f"{cmd.name} param {name}={value!r} does not fit its u64 word(s)")
        words += parts
    return MESSAGE.pack(_u64(cmd_id, "id"), cmd, *words, *[0] * (PARAM_WORDS - len(words)))


def decode_command(message: bytes) -> Command:
    """A command from its 64-byte message (the peer's bytes: any value decodes; an unknown type
    gives ``params`` None, for the server to answer INVALID_COMMAND)."""
    cmd_id, cmd_type, *words = MESSAGE.unpack(message)
    try:
        cmd = FsCommand(cmd_type)
    except ValueError:
        return Command(cmd_id, cmd_type, None)
    values: list[Any] = []
    at = 0
    for _, kind in COMMAND_FIELDS[cmd]:
        if kind == "buf":
            values.append(FsBuffer(words[at], words[at + 1]))
            at += 2
        else:
            word = words[at]
            values.append(word - (1 << 64) if kind == "i64" and word >> 63 else word)
            at += 1
    return Command(cmd_id, cmd, PARAMS[cmd](*values))


def encode_completion(done: Completion) -> bytes:
    return MESSAGE.pack(_u64(done.id, "id"), _u64(done.status, "status"), _u64(done.data, "data"), 0, 0, 0, 0, 0)


def decode_completion(message: bytes) -> Completion:
    cmd_id, status, data, *_ = MESSAGE.unpack(message)
    return Completion(cmd_id, status, data)


def _u64(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= U64:
        raise ValueError(f"{what} {value!r} does not fit a u64")
    return value


# ---- fs_stat_t ------------------------------------------------------------------------------
class FsStat(NamedTuple):
    """fs_stat_t: what STAT writes to the client's buffer."""

    dev: int = 0
    ino: int = 0
    mode: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    size: int = 0
    blksize: int = 0
    blocks: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    atime_nsec: int = 0
    mtime_nsec: int = 0
    ctime_nsec: int = 0
    used: int = 0


STAT = struct.Struct("<17Q")
STAT_SIZE = STAT.size  # 136


def encode_stat(stat: FsStat) -> bytes:
    return STAT.pack(*stat)


def decode_stat(data: bytes) -> FsStat:
    return FsStat(*STAT.unpack_from(data))


# ---- queue ends -----------------------------------------------------------------------------
class _FsQueueEnd:
    """One end of an fs_queue_t in shared memory; it alone writes its own index."""

    def __init__(self, name: str, buffer: Any, producer: bool, on_refuse: OnRefuse | None) -> None:
        view = memoryview(buffer).cast("B")
        if len(view) < QUEUE_SIZE:
            raise ValueError(f"queue {name!r}: an fs queue needs {QUEUE_SIZE} bytes, the region has {len(view)}")
        self.name = name
        self.capacity = QUEUE_CAPACITY
        self.on_refuse = on_refuse
        self._slots = view[QUEUE_HEADER:QUEUE_SIZE]
        self._ptr = atomic.pointer(view)
        self._producer = producer
        self._own_offset, self._peer_offset = (TAIL_OFFSET, HEAD_OFFSET) if producer else (HEAD_OFFSET, TAIL_OFFSET)
        # attaching trusts memory once (a restarted PD resumes where it stopped) unless the
        # indices contradict each other; then the queue starts afresh
        self._own = atomic.load_acquire_u64(self._ptr, self._own_offset)
        self._peer = atomic.load_acquire_u64(self._ptr, self._peer_offset)
        if self._used(self._peer) > QUEUE_CAPACITY:
            self._violation(f"indices own={self._own} peer={self._peer} are {self._used(self._peer)} apart")

    def _used(self, peer: int) -> int:
        """Messages in the queue if the peer's index were ``peer``."""
        return ((self._own - peer) if self._producer else (peer - self._own)) & U64

    def _refresh(self) -> int:
        """Read and check the peer's index; the number of messages in the queue."""
        peer = atomic.load_acquire_u64(self._ptr, self._peer_offset)
        moved, before = (peer - self._peer) & U64, self._used(self._peer)
        # a consumer's head may catch up with our tail, no further; a producer's tail may run ahead
        # of our head by the capacity at most (a move backwards shows as a huge ``moved``)
        broken = moved > before if self._producer else before + moved > QUEUE_CAPACITY
        if broken:
            which = "head" if self._producer else "tail"
            self._violation(f"peer's {which} jumped from {self._peer} to {peer} "
                            f"(our {'tail' if self._producer else 'head'} is {self._own}, capacity {QUEUE_CAPACITY})")
            return self._used(self._peer)
        self._peer = peer
        return self._used(peer)

    def _violation(self, problem: str) -> None:
        """Raise; or, with ``on_refuse``, report it and start afresh: move our index to the peer's
        so the queue is empty and consistent again (whatever it held is dropped)."""
        error = QueueProtocolError(self.name, problem)
        if self.on_refuse is None:
            raise error
        self.on_refuse(f"{self.name}.protocol_errors", str(error))
        self._peer = atomic.load_acquire_u64(self._ptr, self._peer_offset)
        self._own = self._peer
        atomic.store_release_u64(self._ptr, self._own_offset, self._own)

    def _slot(self, index: int) -> memoryview:
        at = (index % QUEUE_CAPACITY) * MSG_SIZE
        return self._slots[at:at + MSG_SIZE]


class FsQueueProducer(_FsQueueEnd):
    """The producing end: a client's command queue, a server's completion queue."""

    def __init__(self, name: str, buffer: Any, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, True, on_refuse)

    def free(self) -> int:
        """Room for this many more messages."""
        return QUEUE_CAPACITY - self._refresh()

    def enqueue_many(self, messages: list[bytes]) -> int:
        """Write as many of ``messages`` (64 bytes each) as fit, publish them with one release
        store; return how many."""
        count = min(len(messages), self.free())
        for i in range(count):
            if len(messages[i]) != MSG_SIZE:
                raise ValueError(f"queue {self.name!r}: a message is {MSG_SIZE} bytes, not {len(messages[i])}")
            self._slot(self._own + i)[:] = messages[i]
        if count:
            self._own = (self._own + count) & U64
            atomic.store_release_u64(self._ptr, TAIL_OFFSET, self._own)
        return count

    def enqueue(self, message: bytes) -> bool:
        return self.enqueue_many([message]) == 1


class FsQueueConsumer(_FsQueueEnd):
    """The consuming end: a server's command queue, a client's completion queue."""

    def __init__(self, name: str, buffer: Any, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, False, on_refuse)

    def pending(self) -> int:
        return self._refresh()

    def dequeue_many(self, max_count: int = QUEUE_CAPACITY) -> list[bytes]:
        """Copy out up to ``max_count`` messages (private copies: the peer cannot change them under
        us), release them with one store."""
        count = min(self._refresh(), max_count)
        out = [bytes(self._slot(self._own + i)) for i in range(count)]
        if count:
            self._own = (self._own + count) & U64
            atomic.store_release_u64(self._ptr, HEAD_OFFSET, self._own)
        return out
