"""The LionsOS fs protocol: byte layout (checked against gcc's), message round trips, queue ends
facing hostile indices, the client library's matching of completions and its share allocator."""
from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sddf import atomic
from sddf.fs.client import FsClientCore, ShareAllocator
from sddf.fs.config import FsConnection
from sddf.fs.cothread import Cothread
from sddf.fs.protocol import (COMMAND_FIELDS, HEAD_OFFSET, MSG_SIZE, PARAMS, QUEUE_CAPACITY, QUEUE_HEADER,
                              QUEUE_SIZE, STAT_SIZE, TAIL_OFFSET, U64, Completion, FsBuffer, FsCommand,
                              FsQueueConsumer, FsQueueProducer, FsStat, FsStatus, decode_command,
                              decode_completion, decode_stat, encode_command, encode_completion, encode_stat)
from sddf.queue.ring import QueueProtocolError

pytestmark = pytest.mark.timeout(60)

# include/lions/fs/protocol.h's structs as lionsos-fs-facts.md gives them, laid out by gcc
C_STRUCTS = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
typedef struct { uint64_t offset, size; } fs_buffer_t;
typedef union {
    struct { fs_buffer_t path; uint64_t flags; } file_open;
    struct { uint64_t fd; } file_close;
    struct { fs_buffer_t path; fs_buffer_t buf; } stat;
    struct { uint64_t fd; uint64_t offset; fs_buffer_t buf; } file_read;
    struct { uint64_t fd; uint64_t offset; fs_buffer_t buf; } file_write;
    struct { fs_buffer_t old_path; fs_buffer_t new_path; } rename;
    struct { uint64_t fd; uint64_t length; } file_truncate;
    struct { uint64_t fd; fs_buffer_t buf; } dir_read;
    struct { uint64_t fd; int64_t loc; } dir_seek;
    uint8_t size[48];
} fs_cmd_params_t;
typedef struct { uint64_t id; uint64_t type; fs_cmd_params_t params; } fs_cmd_t;
typedef union { struct { uint64_t fd; } file_open; struct { uint64_t len_read; } file_read; uint8_t size[48]; }
    fs_cmpl_data_t;
typedef struct { uint64_t id; uint64_t status; fs_cmpl_data_t data; } fs_cmpl_t;
typedef union { fs_cmd_t cmd; fs_cmpl_t cmpl; } fs_msg_t;
typedef struct { uint64_t head; uint64_t tail; uint8_t padding[48]; fs_msg_t buffer[511]; } fs_queue_t;
typedef struct { uint64_t dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks, atime, mtime, ctime,
                 atime_nsec, mtime_nsec, ctime_nsec, used; } fs_stat_t;
#define P(name, value) printf("%s %zu\n", name, (size_t)(value))
int main(void) {
    P("queue", sizeof(fs_queue_t)); P("head", offsetof(fs_queue_t, head)); P("tail", offsetof(fs_queue_t, tail));
    P("buffer", offsetof(fs_queue_t, buffer)); P("msg", sizeof(fs_msg_t)); P("stat", sizeof(fs_stat_t));
    P("stat.size", offsetof(fs_stat_t, size)); P("stat.used", offsetof(fs_stat_t, used));
    P("cmd.type", offsetof(fs_cmd_t, type)); P("cmd.params", offsetof(fs_cmd_t, params));
    P("cmpl.status", offsetof(fs_cmpl_t, status)); P("cmpl.data", offsetof(fs_cmpl_t, data));
    P("file_open.flags", offsetof(fs_cmd_t, params.file_open.flags));
    P("stat.buf.offset", offsetof(fs_cmd_t, params.stat.buf.offset));
    P("file_read.offset", offsetof(fs_cmd_t, params.file_read.offset));
    P("file_read.buf.size", offsetof(fs_cmd_t, params.file_read.buf.size));
    P("rename.new_path.size", offsetof(fs_cmd_t, params.rename.new_path.size));
    P("file_truncate.length", offsetof(fs_cmd_t, params.file_truncate.length));
    P("dir_read.buf.offset", offsetof(fs_cmd_t, params.dir_read.buf.offset));
    P("dir_seek.loc", offsetof(fs_cmd_t, params.dir_seek.loc));
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("fs_layout")
    (d / "layout.c").write_text(C_STRUCTS)
    subprocess.run(["gcc", "-std=c11", "-o", str(d / "layout"), str(d / "layout.c")], check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_queue_and_struct_sizes_are_gccs(c_layout: dict[str, int]) -> None:
    assert (QUEUE_SIZE, QUEUE_HEADER, MSG_SIZE, STAT_SIZE) == (c_layout["queue"], c_layout["buffer"],
                                                               c_layout["msg"], c_layout["stat"])
    assert (HEAD_OFFSET, TAIL_OFFSET) == (c_layout["head"], c_layout["tail"])
    stat = encode_stat(FsStat(size=0x1122, used=0x3344))
    assert struct.unpack_from("<Q", stat, c_layout["stat.size"])[0] == 0x1122
    assert struct.unpack_from("<Q", stat, c_layout["stat.used"])[0] == 0x3344


@pytest.mark.parametrize(("cmd", "params", "field", "value"), [
    (FsCommand.FILE_OPEN, (FsBuffer(1, 2), 6), "file_open.flags", 6),
    (FsCommand.STAT, (FsBuffer(1, 2), FsBuffer(77, 136)), "stat.buf.offset", 77),
    (FsCommand.FILE_READ, (3, 4096, FsBuffer(64, 999)), "file_read.offset", 4096),
    (FsCommand.FILE_READ, (3, 4096, FsBuffer(64, 999)), "file_read.buf.size", 999),
    (FsCommand.RENAME, (FsBuffer(1, 2), FsBuffer(3, 44)), "rename.new_path.size", 44),
    (FsCommand.FILE_TRUNCATE, (5, 12345), "file_truncate.length", 12345),
    (FsCommand.DIR_READ, (5, FsBuffer(640, 256)), "dir_read.buf.offset", 640),
    (FsCommand.DIR_SEEK, (5, -2), "dir_seek.loc", U64 - 1),
])
def test_command_params_sit_where_gcc_puts_them(c_layout: dict[str, int], cmd: FsCommand, params: tuple,
                                                field: str, value: int) -> None:
    message = encode_command(0xABCD, cmd, *params)
    assert struct.unpack_from("<Q", message, 0)[0] == 0xABCD
    assert struct.unpack_from("<Q", message, c_layout["cmd.type"])[0] == cmd
    assert struct.unpack_from("<Q", message, c_layout[field])[0] == value


def test_completion_fields_sit_where_gcc_puts_them(c_layout: dict[str, int]) -> None:
    message = encode_completion(Completion(7, FsStatus.END_OF_DIRECTORY, 99))
    assert struct.unpack_from("<QQQ", message, 0) == (7, FsStatus.END_OF_DIRECTORY, 99)
    assert (c_layout["cmpl.status"], c_layout["cmpl.data"]) == (8, 16)


u64 = st.integers(0, U64)


@st.composite
def commands(draw: st.DrawFn) -> tuple[int, FsCommand, tuple]:
    cmd = draw(st.sampled_from(list(FsCommand)))
    values: list[object] = []
    for _, kind in COMMAND_FIELDS[cmd]:
        if kind == "buf":
            values.append(FsBuffer(draw(u64), draw(u64)))
        elif kind == "i64":
            values.append(draw(st.integers(-(1 << 63), (1 << 63) - 1)))
        else:
            values.append(draw(u64))
    return draw(u64), cmd, tuple(values)


@given(commands())
def test_every_command_round_trips(case: tuple[int, FsCommand, tuple]) -> None:
    cmd_id, cmd, params = case
    message = encode_command(cmd_id, cmd, *params)
    assert len(message) == MSG_SIZE
    decoded = decode_command(message)
    assert (decoded.id, decoded.type, tuple(decoded.params)) == (cmd_id, cmd, params)
    assert isinstance(decoded.params, PARAMS[cmd])


@given(u64, st.integers(len(FsCommand), U64), st.binary(min_size=48, max_size=48))
def test_an_unknown_command_type_decodes_without_params(cmd_id: int, cmd_type: int, rest: bytes) -> None:
    decoded = decode_command(struct.pack("<QQ", cmd_id, cmd_type) + rest)
    assert (decoded.id, decoded.type, decoded.params) == (cmd_id, cmd_type, None)


@given(u64, u64, u64)
def test_completions_round_trip(cmd_id: int, status: int, data: int) -> None:
    assert decode_completion(encode_completion(Completion(cmd_id, status, data))) == Completion(cmd_id, status, data)


@given(st.lists(u64, min_size=17, max_size=17))
def test_stat_round_trips(values: list[int]) -> None:
    assert decode_stat(encode_stat(FsStat(*values))) == FsStat(*values)


@pytest.mark.parametrize(("cmd", "params", "culprit"), [
    (FsCommand.FILE_CLOSE, (-1,), "fd"),
    (FsCommand.FILE_READ, (1, 1 << 64, FsBuffer(0, 1)), "offset"),
    (FsCommand.STAT, (FsBuffer(0, 1), FsBuffer(-5, 1)), "buf"),
    (FsCommand.FILE_CLOSE, (), "takes 1 params"),
])
def test_encoding_refuses_what_does_not_fit(cmd: FsCommand, params: tuple, culprit: str) -> None:
    with pytest.raises(ValueError, match=culprit):
        encode_command(1, cmd, *params)


# ---- queue ends --------------------------------------------------------------------------
def msg(i: int) -> bytes:
    return encode_completion(Completion(i, 0, i * 3))


def pair(region: bytearray | None = None) -> tuple[FsQueueProducer, FsQueueConsumer, bytearray]:
    region = region if region is not None else bytearray(QUEUE_SIZE)
    return FsQueueProducer("fs_test_q", region), FsQueueConsumer("fs_test_q", region), region


def test_messages_go_to_slot_index_mod_511_and_indices_are_u64_at_0_and_8() -> None:
    producer, consumer, region = pair()
    for i in range(600):
        assert producer.enqueue(msg(i))
        assert consumer.dequeue_many() == [msg(i)]
    assert struct.unpack_from("<QQ", region, 0) == (600, 600)  # head, tail
    last = QUEUE_HEADER + (599 % QUEUE_CAPACITY) * MSG_SIZE
    assert bytes(region[last:last + MSG_SIZE]) == msg(599)


def test_a_full_queue_takes_nothing_more() -> None:
    producer, consumer, _ = pair()
    assert producer.enqueue_many([msg(i) for i in range(QUEUE_CAPACITY + 5)]) == QUEUE_CAPACITY
    assert not producer.enqueue(msg(9999)) and producer.free() == 0
    assert consumer.dequeue_many(3) == [msg(0), msg(1), msg(2)]
    assert producer.free() == 3


@settings(max_examples=50)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 700)), max_size=30))
def test_the_queue_is_fifo_with_any_batches(ops: list[tuple[bool, int]]) -> None:
    producer, consumer, _ = pair()
    model: deque[bytes] = deque()
    sent = 0
    for produce, n in ops:
        if produce:
            put = producer.enqueue_many([msg(sent + i) for i in range(n)])
            assert put == min(n, QUEUE_CAPACITY - len(model))
            model.extend(msg(sent + i) for i in range(put))
            sent += put
        else:
            got = consumer.dequeue_many(n)
            assert got == [model.popleft() for _ in range(len(got))]
            assert len(got) == min(n, len(got) + len(model))


@pytest.mark.parametrize(("offset", "value", "end"), [
    (TAIL_OFFSET, QUEUE_CAPACITY + 1, "consumer"),  # the producer claims more than fits
    (TAIL_OFFSET, U64, "consumer"),                 # its tail moved backwards
    (HEAD_OFFSET, 3, "producer"),                   # the consumer claims past our tail (2)
    (HEAD_OFFSET, U64, "producer"),                 # its head moved backwards
])
def test_a_peer_index_that_jumps_is_refused_naming_the_queue(offset: int, value: int, end: str) -> None:
    producer, consumer, region = pair()
    producer.enqueue_many([msg(0), msg(1)])
    atomic.store_release_u64(atomic.pointer(region), offset, value)
    with pytest.raises(QueueProtocolError, match="fs_test_q"):
        consumer.dequeue_many() if end == "consumer" else producer.enqueue(msg(2))


def test_with_on_refuse_a_broken_queue_is_reported_and_starts_afresh() -> None:
    region = bytearray(QUEUE_SIZE)
    refused: Counter[str] = Counter()
    producer = FsQueueProducer("cmds", region)
    consumer = FsQueueConsumer("cmds", region, on_refuse=lambda counter, _why: refused.update([counter]))
    producer.enqueue(msg(0))
    atomic.store_release_u64(atomic.pointer(region), TAIL_OFFSET, 10_000)
    assert consumer.dequeue_many() == [] and refused == Counter({"cmds.protocol_errors": 1})
    atomic.store_release_u64(atomic.pointer(region), TAIL_OFFSET, 10_001)  # a producer that carries on
    assert consumer.dequeue_many() == [bytes(region[QUEUE_HEADER + 10_000 % 511 * 64:][:64])]


def test_attaching_to_contradictory_indices_is_refused() -> None:
    region = bytearray(QUEUE_SIZE)
    struct.pack_into("<QQ", region, 0, 5, 5 + QUEUE_CAPACITY + 1)
    with pytest.raises(QueueProtocolError, match="fs_q"):
        FsQueueConsumer("fs_q", region)


# ---- the client library's core -----------------------------------------------------------
def client_core(refused: Counter[str]) -> tuple[FsClientCore, FsQueueConsumer, FsQueueProducer]:
    regions = {"cmd": memoryview(bytearray(QUEUE_SIZE)), "cmpl": memoryview(bytearray(QUEUE_SIZE)),
               "share": memoryview(bytearray(1 << 16))}
    core = FsClientCore("client", regions, FsConnection("cmd", "cmpl", "share", 1 << 16, 0),
                        lambda counter, _why: refused.update([counter]))
    return core, FsQueueConsumer("server", regions["cmd"]), FsQueueProducer("server", regions["cmpl"])


def test_the_client_matches_completions_by_id_and_refuses_the_rest() -> None:
    refused: Counter[str] = Counter()
    core, commands, completions = client_core(refused)
    first, second = core.submit(FsCommand.INITIALISE), core.submit(FsCommand.FILE_SIZE, 3)
    assert [decode_command(m).id for m in commands.dequeue_many()] == [first, second]
    completions.enqueue_many([encode_completion(Completion(second, FsStatus.SUCCESS, 42)),
                              encode_completion(Completion(999, FsStatus.SUCCESS, 1)),     # never sent
                              encode_completion(Completion(second, FsStatus.SUCCESS, 43)),  # answered twice
                              encode_completion(Completion(first, 77, 0))])                 # unknown status
    core.poll()
    assert core.results == {second: Completion(second, FsStatus.SUCCESS, 42),
                            first: Completion(first, FsStatus.ERROR, 0)}
    assert refused == Counter({"fs_unknown_completion": 2, "fs_unknown_status": 1})
    assert core.outstanding == {}


@settings(max_examples=60)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5000)), max_size=40))
def test_share_slices_never_overlap_and_all_come_back(ops: list[tuple[bool, int]]) -> None:
    alloc = ShareAllocator(1 << 14)
    held: list[FsBuffer] = []
    for take, size in ops:
        if take:
            buf = alloc.take(size)
            if buf is not None:
                assert buf.size == size and buf.offset + size <= alloc.size
                held.append(buf)
        elif held:
            alloc.give(held.pop(size % len(held)))
        spans = sorted((b.offset, b.offset + max(b.size, 1)) for b in held)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    for buf in held:
        alloc.give(buf)
    assert alloc.take(1 << 14) == FsBuffer(0, 1 << 14)


# ---- cothreads -----------------------------------------------------------------------------
def test_a_cothread_runs_only_between_resume_and_wait() -> None:
    trace: list[str] = []
    co: Cothread

    def body() -> None:
        for i in range(3):
            trace.append(f"body {i}")
            co.wait()

    co = Cothread("test", body)
    for i in range(4):
        trace.append(f"loop {i}")
        co.resume()
    assert trace == ["loop 0", "body 0", "loop 1", "body 1", "loop 2", "body 2", "loop 3"]
    assert co.finished
    co.resume()  # a finished body: nothing to run


def test_what_a_cothread_raises_is_raised_by_resume_and_wait_is_its_own() -> None:
    def body() -> None:
        raise KeyError("broken body")

    co = Cothread("test", body)
    with pytest.raises(KeyError, match="broken body"):
        co.resume()
    with pytest.raises(RuntimeError, match="outside its body"):
        Cothread("other", body).wait()
