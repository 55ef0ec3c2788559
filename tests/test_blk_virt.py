"""The block virtualiser on the test bench: partitions, request checks, fairness, driver restarts.

The system is the real one ``Sddf.Blk`` builds — the image-file driver (I/O inline), the
virtualiser and idle client PDs whose queues the test drives with ``BlkClient`` — over an image
in a temp directory; where the test must choose what the driver answers (and when), it plays the
driver itself (:class:`blk_helpers.rig.ScriptedDriver`).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blk_helpers.images import SECTOR, gpt_image, mbr_image
from blk_helpers.rig import DRIVER_PD, IDLE, VIRT_PD, BlkRig, ScriptedDriver
from sddf.blk.client import BlkClient
from sddf.blk.queue import BLK_TRANSFER_SIZE, BlkReqCode, BlkRespStatus, ReqProducer, RespConsumer, set_not_ready
from sddf.virtualisers.blk import virt as virt_module

B = BLK_TRANSFER_SIZE
MIB = 1 << 20
OK, INVALID, IO, UNSPEC = (BlkRespStatus.OK, BlkRespStatus.ERR_INVALID_PARAM, BlkRespStatus.ERR_IO,
                           BlkRespStatus.ERR_UNSPEC)
READ, WRITE, FLUSH, BARRIER = BlkReqCode.READ, BlkReqCode.WRITE, BlkReqCode.FLUSH, BlkReqCode.BARRIER

# a 4 MiB disk: partition 0 is 64 blocks at 1 MiB, partition 1 is 32 blocks and 5 sectors at
# 2 MiB (the sectors past its last whole block are out of reach), partition 2 has no client
DISK = 4 * MIB
PARTS = [(0x83, 2048, 512), (0x0C, 4096, 261), (0x83, 6144, 128)]
# client → (partition, queue capacity, data region size); c's partition 3 does not exist
CLIENTS = {"a": (0, 8, 16 * B), "b": (1, 4, 8 * B), "c": (3, 2, 2 * B)}
REACHABLE = {"a": (1 * MIB, 64), "b": (2 * MIB, 32)}  # client → (first byte, whole blocks)


def write_image(path: str, image: bytearray) -> str:
    with open(path, "wb") as f:
        f.write(image)
    return path


def random_mbr_image(seed: int = 1) -> bytearray:
    fill = random.Random(seed).randbytes(64 * 1024 + 7)  # no block repeats another at the same place
    return mbr_image(DISK, PARTS, fill)


def outside_partitions(image: bytes) -> str:
    """A hash of every byte a client may not reach."""
    masked = bytearray(image)
    for start, blocks in REACHABLE.values():
        masked[start:start + blocks * B] = bytes(blocks * B)
    return hashlib.sha256(masked).hexdigest()


def model_rig(path: str, image: bytearray) -> BlkRig:
    r = BlkRig(write_image(path, image), CLIENTS)
    r.bench.run()
    return r


@pytest.fixture
def rig(tmp_path) -> Iterator[BlkRig]:
    r = model_rig(str(tmp_path / "disk.img"), random_mbr_image())
    yield r
    r.close()


# ---- partitions and storage info ----------------------------------------------------------------
def test_each_client_gets_its_partition_and_a_missing_one_is_refused_with_a_clear_message(tmp_path, capfd) -> None:
    rig = model_rig(str(tmp_path / "disk.img"), random_mbr_image())
    rig.close()
    a, b, c = (rig.clients[n].storage_info() for n in "abc")
    assert a is not None and b is not None
    assert (a.capacity, b.capacity) == (64, 32)  # b's 5 sectors past its last whole block are not usable
    assert (a.sector_size, a.read_only, a.serial_number) == (512, False, b"pysddf")
    assert c is None, "a client without a partition stays not ready"
    assert ("client c (#2) cannot have partition 3: partition 3 does not exist (the disk's MBR table has "
            "partitions [0, 1, 2]); it stays not ready and its requests are answered ERR_INVALID_PARAM"
            ) in capfd.readouterr().out


def test_a_client_of_a_misaligned_partition_is_refused_and_the_others_served(tmp_path, capfd) -> None:
    image = gpt_image(DISK, [(2048, 2559), (4097, 4352)])  # partition 1 starts one sector past a block
    r = BlkRig(write_image(str(tmp_path / "gpt.img"), image), {"a": (0, 4, B), "b": (1, 4, B)})
    try:
        r.bench.run()
        assert r.clients["a"].storage_info().capacity == 64  # type: ignore[union-attr]
        assert r.clients["b"].storage_info() is None
        assert ("client b (#1) cannot have partition 1: partition 1 starts at byte 2097664, which is not a "
                "multiple of the 4096-byte transfer size") in capfd.readouterr().out
        r.clients["b"].read(0, 0, 1)
        r.kick("b")
        r.bench.run()
        assert [(d.status, d.success_count) for d in r.clients["b"].completions()] == [(INVALID, 0)]
    finally:
        r.close()


def test_a_corrupt_gpt_leaves_every_client_not_ready_and_says_why(tmp_path, capfd) -> None:
    image = gpt_image(DISK, [(2048, 2559)])
    image[SECTOR + 60] ^= 1  # inside the primary header: its CRC fails
    r = BlkRig(write_image(str(tmp_path / "bad.img"), image), {"a": (0, 4, B)})
    try:
        r.bench.run()
        assert r.clients["a"].storage_info() is None
        out = capfd.readouterr().out
        assert "cannot use the disk's partition table: the primary GPT header (LBA 1) fails its CRC32" in out
        r.clients["a"].read(0, 0, 1)
        r.kick("a")
        r.bench.run()
        assert [d.status for d in r.clients["a"].completions()] == [INVALID]
        assert r.virt_counters()["requests"] == 0
    finally:
        r.close()


# ---- request streams against a model disk --------------------------------------------------------
KINDS = ["read", "write", "flush", "barrier", "past_end", "far_block", "count0", "unaligned", "beyond_data", "bad_code"]
OP = st.tuples(st.sampled_from(sorted(CLIENTS)), st.sampled_from(KINDS), st.integers(0, 2**16),
               st.integers(1, 4), st.integers(0, 2**16))


@dataclass
class Expect:
    status: int
    success_count: int | None  # None: not checked (FLUSH, BARRIER)
    read: tuple[int, bytes] | None = None  # (data offset, bytes it must hold)


@dataclass
class ClientModel:
    """What a client's partition must hold, and the batch being built for it."""

    client: BlkClient
    partition: bytearray | None
    data_size: int
    next_offset: int = 0
    busy: set[int] = field(default_factory=set)  # blocks a request of this batch touches
    expect: dict[int, Expect] = field(default_factory=dict)


class ModelRun:
    """Submits requests to the clients in batches, runs the bench, checks every answer."""

    def __init__(self, rig: BlkRig, image: bytearray, rng: random.Random) -> None:
        self.rig, self.rng = rig, rng
        self.models = {}
        for name, client in rig.clients.items():
            reach = REACHABLE.get(name)
            part = bytearray(image[reach[0]:reach[0] + reach[1] * B]) if reach else None
            self.models[name] = ClientModel(client, part, CLIENTS[name][2])

    def request(self, name: str, kind: str, x: int, count: int, y: int) -> None:
        m = self.models[name]
        blocks = len(m.partition) // B if m.partition is not None else 16
        count = min(count, m.data_size // B)
        block = x % (blocks - count + 1)
        if kind in ("read", "write") and (m.next_offset + count * B > m.data_size
                                          or m.busy & set(range(block, block + count))):
            self.finish()  # no data room left, or it overlaps this batch's requests: a new batch
        if len(m.client.outstanding) == m.client.capacity:
            self.finish()
        offset, code = m.next_offset, {"write": WRITE, "flush": FLUSH, "barrier": BARRIER}.get(kind, READ)
        good = kind in ("read", "write", "flush", "barrier") and m.partition is not None
        if kind == "past_end":
            block = blocks - count + 1 + y % 3  # its last block is just past the partition (or a little further)
        elif kind == "far_block":
            block = 2**64 - 1 - y
        elif kind == "count0":
            count = 0
        elif kind == "unaligned":
            offset = y % (m.data_size // B) * B + 1 + y % (B - 1)
        elif kind == "beyond_data":
            offset = m.data_size - (count - 1) * B + (y % 4) * B
        elif kind == "bad_code":
            code = 4 + y
        if good and kind == "write":
            payload = self.rng.randbytes(count * B)
            m.client.data[offset:offset + count * B] = payload
            m.partition[block * B:(block + count) * B] = payload  # type: ignore[index]
        rid = m.client.submit(code, offset, block, count)
        assert rid is not None
        if not good:
            m.expect[rid] = Expect(INVALID, 0)
        elif kind in ("flush", "barrier"):
            m.expect[rid] = Expect(OK, None)
        else:
            m.busy.update(range(block, block + count))
            m.next_offset += count * B
            data = bytes(m.partition[block * B:(block + count) * B])  # type: ignore[index]
            m.expect[rid] = Expect(OK, count, (offset, data) if kind == "read" else None)

    def finish(self) -> None:
        """Run the batch: every request answered once, as expected."""
        self.rig.kick(*self.rig.clients)
        self.rig.bench.run()
        for name, m in self.models.items():
            done = {d.id: d for d in m.client.completions()}
            assert set(done) == set(m.expect), f"{name}: answered {sorted(done)}, sent {sorted(m.expect)}"
            for rid, want in m.expect.items():
                got = done[rid]
                assert got.status == want.status, f"{name} id {rid} {got.request}: status {got.status}, want {want}"
                if want.success_count is not None:
                    assert got.success_count == want.success_count, f"{name} id {rid}: {got}"
                if want.read is not None:
                    offset, data = want.read
                    assert bytes(m.client.data[offset:offset + len(data)]) == data, f"{name} id {rid} read wrong data"
            m.expect.clear()
            m.busy.clear()
            m.next_offset = 0
        assert not self.rig.refused, f"clients refused responses: {self.rig.refused}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OP, min_size=10, max_size=60), seed=st.integers(0, 2**32))
def test_request_streams_are_answered_once_and_never_escape_their_partition(tmp_path, ops, seed) -> None:
    image = random_mbr_image(seed)
    path = str(tmp_path / f"model{seed}.img")
    rig = model_rig(path, image)
    try:
        run = ModelRun(rig, image, random.Random(seed))
        for op in ops:
            run.request(*op)
        run.finish()
        with open(path, "rb") as f:
            after = f.read()
        assert outside_partitions(after) == outside_partitions(image), "bytes outside the partitions changed"
        for name, (start, blocks) in REACHABLE.items():
            assert after[start:start + blocks * B] == run.models[name].partition, f"{name}'s partition differs"
        invalid = sum(1 for op in ops if op[1] not in ("read", "write", "flush", "barrier") or op[0] == "c")
        assert sum(n for k, n in rig.virt_counters().items() if k.endswith(".invalid_requests")) == invalid
    finally:
        rig.close()


# ---- fairness -----------------------------------------------------------------------------------
class Flooder:
    """A client that keeps its request queue full (reusing ids, as a hostile client may) with a mix
    of good reads and bad requests, and throws its answers away."""

    def __init__(self, rig: BlkRig, name: str) -> None:
        self.rig, self.name = rig, name
        req, resp, capacity = rig.client_config(name).queues.views(rig.bench.component(name).regions)
        self.requests = ReqProducer("flood:req", req, capacity)
        self.responses = RespConsumer("flood:resp", resp, capacity)
        self.answers = 0
        self.sent = 0

    def flood(self) -> None:
        self.answers += len(self.responses.dequeue_many())
        n = self.requests.free_slots()
        batch = [(READ, 0, 0, 1, i) if i % 3 else (READ, 0, 10**6, 1, i) for i in range(self.sent, self.sent + n)]
        self.sent += self.requests.enqueue_many(batch)
        self.rig.kick(self.name)


def test_a_flooding_client_does_not_hold_up_another(tmp_path) -> None:
    """With the image-file driver, a client keeping its queue full of good and bad requests: each
    of the other client's reads completes within 2 bench steps of being queued (one for the
    virtualiser to pass it on, one for the driver to answer and the virtualiser to pass that back)."""
    r = BlkRig(write_image(str(tmp_path / "disk.img"), random_mbr_image()),
               {"flood": (0, 64, B), "victim": (1, 4, B)})
    try:
        r.bench.run()
        flooder, victim = Flooder(r, "flood"), r.clients["victim"]
        for _ in range(5):
            flooder.flood()
            r.bench.step()
        for i in range(20):
            victim.read(0, i, 1)
            r.kick("victim")
            for steps in range(1, 3):
                flooder.flood()
                r.bench.step()
                if victim.completions():
                    break
            else:
                pytest.fail(f"the victim's read {i} was not answered within 2 steps of a flood")
        assert flooder.answers > 20 * 64, "the flooder was served all along"
        assert r.virt_counters()["flood.invalid_requests"] > 0
        assert r.virt_counters()["flood.lost_responses"] == 0, "room was kept for every answer"
    finally:
        r.close()


def test_when_driver_ids_run_out_a_waiting_client_gets_the_next_free_one(tmp_path, monkeypatch) -> None:
    """A flooder with more requests than the virtualiser's 1024 driver ids holds them all; the
    driver frees one id per step. Both clients then wait for ids and take turns: the victim's
    request reaches the driver within 2 freed ids (the flooder, waiting first, may get one). (Serving
    from client 0 every time, as sDDF does, gives every freed id back to the flooder and the other
    client waits for ever.)"""
    image = random_mbr_image()
    r = BlkRig(write_image(str(tmp_path / "disk.img"), image),
               {"flood": (0, 2 * virt_module.MAX_SLOTS, B), "victim": (1, 4, B)}, driver=IDLE)
    try:
        driver = ScriptedDriver(r, image)
        driver.publish()
        for _ in range(8):  # the table reads
            r.bench.run()
            driver.take()
            driver.answer()
        assert r.clients["victim"].storage_info() is not None
        flooder, victim = Flooder(r, "flood"), r.clients["victim"]
        flooder.flood()
        r.bench.run()
        assert driver.take() == virt_module.MAX_SLOTS, "the flooder holds every driver id"
        victim_io = r.bench.component(VIRT_PD).clients[1].io_addr
        for i in range(10):
            victim.read(0, i, 1)
            r.kick("victim")
            r.bench.step()  # the virtualiser finds no free id: the read waits in the victim's queue
            assert driver.take() == 0
            for step in range(1, 40):
                driver.answer(1)  # frees one id
                flooder.flood()
                r.bench.step()
                taken = driver.take()
                assert taken == 1, "each freed id is used at once"
                if driver.pending[-1][1] == victim_io:
                    break
            else:
                pytest.fail(f"the victim's read {i} never got a driver id")
            assert step <= 2, f"the victim's read {i} waited {step} steps for a driver id"
            driver.pending.rotate(1)  # the driver answers it next (requests may complete out of order)
            driver.answer(1)
            r.bench.step()
            assert [c.status for c in victim.completions()] == [OK]
            assert driver.take() == 1, "the id it freed went to the flooder"
    finally:
        r.close()


# ---- the driver's answers -----------------------------------------------------------------------
@pytest.fixture
def scripted(tmp_path) -> Iterator[tuple[BlkRig, ScriptedDriver]]:
    image = random_mbr_image()
    r = BlkRig(write_image(str(tmp_path / "disk.img"), image), {"a": (0, 8, 8 * B), "b": (1, 8, 8 * B)}, driver=IDLE)
    driver = ScriptedDriver(r, image)
    driver.publish()
    while r.bench.run() and driver.take():
        driver.answer()
    assert r.clients["a"].storage_info() is not None
    yield r, driver
    r.close()


def test_a_driver_answer_under_an_id_never_sent_is_refused_and_counted(scripted) -> None:
    r, driver = scripted
    a = r.clients["a"]
    first, second = a.read(0, 0, 1), a.read(B, 1, 1)
    r.kick("a")
    r.bench.run()
    assert driver.take() == 2
    (_, _, _, _, id1), (_, _, _, _, id2) = driver.pending
    free = next(i for i in range(virt_module.MAX_SLOTS) if i not in (id1, id2))
    driver.answer(1)  # the first, properly
    driver.send([(OK, 1, 5000), (OK, 1, free), (OK, 1, id1), (IO, 0, id2)])  # never sent, free, answered, fine
    r.bench.run()
    assert {(d.id, d.status) for d in a.completions()} == {(first, OK), (second, IO)}
    assert r.virt_counters()["driver.unknown_responses"] == 3
    assert not r.refused, "nothing the client did not ask for reached it"


def test_a_driver_answering_requests_it_has_not_taken_cannot_make_the_virtualiser_lose_one(scripted) -> None:
    """Its ids come back while its queue is still full of their requests: requests that find no room
    in the driver's queue stay in the client's, and go once the driver takes what it holds."""
    r, driver = scripted
    a = r.clients["a"]
    capacity = driver.requests.capacity  # 16: a's 8 and b's 8
    for round_ in range(2):
        for i in range(8):
            a.read(i % 4 * B, i, 1)
        r.kick("a")
        r.bench.run()
        if round_ == 0:  # answered without being taken: their ids are free again, their entries still queued
            driver.send([(OK, 1, req[4]) for req in driver.requests.peek_many(capacity)])
            r.bench.run()
            assert len(a.completions()) == 8
    assert driver.requests.length() == capacity
    b = r.clients["b"]
    for i in range(8):
        b.read(i % 4 * B, i, 1)
    r.kick("b")
    r.bench.run()
    assert driver.requests.length() == capacity and r.bench.component(VIRT_PD).clients[1].requests.length() == 8
    driver.take()
    driver.answer(1)  # wakes the virtualiser (a driver that only takes does not)
    r.bench.run()
    assert driver.take() == 8, "once the driver took what it held, b's 8 went to it"


def test_an_impossible_status_or_count_from_the_driver_is_corrected_and_counted(scripted) -> None:
    r, driver = scripted
    a = r.clients["a"]
    first, second = a.read(0, 0, 1), a.read(B, 1, 2)
    r.kick("a")
    r.bench.run()
    driver.take()
    ids = [req[4] for req in driver.pending]
    driver.pending.clear()
    driver.send([(77, 0, ids[0]), (OK, 9, ids[1])])
    r.bench.run()
    assert {(d.id, d.status, d.success_count) for d in a.completions()} == {(first, UNSPEC, 0), (second, OK, 2)}
    assert r.virt_counters()["driver.bad_status"] == 1 and r.virt_counters()["driver.bad_success_count"] == 1


def test_a_restarted_virtualiser_maps_the_answers_to_its_predecessors_requests(scripted) -> None:
    """Restarted with requests at the driver: the driver answers its new table read first (requests
    may complete out of order), then new requests get ids of their own, and every request, old and
    new, is answered once to the client that sent it, with its data."""
    r, driver = scripted
    a = r.clients["a"]
    old = {a.read(i * B, i, 1): i for i in range(3)}
    r.kick("a")
    r.bench.run()
    assert driver.take() == 3
    old_ids = {req[4] for req in driver.pending}
    r.bench.restart(VIRT_PD)
    r.bench.run()
    assert driver.take() == 1, "the new instance reads the table"
    driver.pending.rotate(1)
    driver.answer(1)
    r.bench.run()
    assert a.storage_info() is not None
    new = {a.read((3 + i) * B, 10 + i, 1): 10 + i for i in range(2)}
    r.kick("a")
    r.bench.run()
    assert driver.take() == 2
    assert not old_ids & {req[4] for req in list(driver.pending)[3:]}, "a driver id still in use was given out again"
    driver.answer()
    r.bench.run()
    done = {d.id: d for d in a.completions()}
    assert set(done) == set(old) | set(new) and all(d.status == OK for d in done.values())
    for rid, block in (old | new).items():
        offset = done[rid].request.offset
        assert bytes(a.data[offset:offset + B]) == bytes(driver.disk[MIB + block * B:MIB + (block + 1) * B])
    assert not r.refused


def test_a_driver_that_goes_away_and_comes_back_has_the_table_read_again(scripted) -> None:
    """The driver takes its storage info back with requests outstanding: the clients are made
    not ready and new requests wait in their queues; the outstanding ones are answered (ERR_IO)
    once each; when the driver is ready again the table is read again, the clients are ready
    again and the waiting requests are served."""
    r, driver = scripted
    a, b = r.clients["a"], r.clients["b"]
    before = [a.read(0, 0, 1), b.read(0, 3, 1)]
    r.kick("a", "b")
    r.bench.run()
    assert driver.take() == 2
    driver.withdraw()
    driver.notify()
    r.bench.run()
    assert a.storage_info() is None and b.storage_info() is None
    waiting = [a.read(B, 5, 1), b.write(B, 6, 1)]
    r.kick("a", "b")
    r.bench.run()
    assert driver.take() == 0, "nothing goes to a driver that is not ready"
    driver.send([(IO, 0, rid) for *_, rid in driver.pending])  # what the restarted driver does
    driver.pending.clear()
    r.bench.run()
    assert [(d.id, d.status) for d in a.completions() + b.completions()] == [(before[0], IO), (before[1], IO)]
    tables = r.virt_counters()["table_reads"]
    driver.publish()
    for _ in range(8):
        r.bench.run()
        if not driver.take():
            break
        driver.answer()
    assert r.virt_counters()["table_reads"] == tables + 1
    assert a.storage_info().capacity == 64 and b.storage_info().capacity == 32  # type: ignore[union-attr]
    assert [(d.id, d.status) for d in a.completions() + b.completions()] == [(waiting[0], OK), (waiting[1], OK)]
    assert not r.refused


def test_the_image_driver_restarting_answers_each_outstanding_request_once(rig: BlkRig) -> None:
    """The real driver, stopped with requests in its queue and restarted: every request is answered
    once, the data is right, and the virtualiser read the table again when the driver was back."""
    a, b = rig.clients["a"], rig.clients["b"]
    a.data[:B] = b"A" * B
    rig.bench.stall(DRIVER_PD)
    sent = {"a": {a.write(0, 7, 1), a.read(B, 0, 1)}, "b": {b.read(0, 31, 1)}}
    rig.kick("a", "b")
    rig.bench.run()
    driver = rig.bench.component(DRIVER_PD)
    set_not_ready(driver.regions[driver.config.virt.storage_info])  # as a driver on its way out would
    rig.bench.kill(DRIVER_PD)
    late = b.read(B, 1, 1)
    rig.kick("b")
    rig.bench.run()
    assert b.storage_info() is None and len(b.outstanding) == 2
    rig.bench.restart(DRIVER_PD)
    rig.bench.run()
    got = {"a": {d.id: d.status for d in a.completions()}, "b": {d.id: d.status for d in b.completions()}}
    assert got == {"a": dict.fromkeys(sent["a"], OK), "b": dict.fromkeys(sent["b"] | {late}, OK)}
    assert rig.virt_counters()["table_reads"] == 2 and b.storage_info() is not None
    with open(rig.image, "rb") as f:
        assert f.read()[MIB + 7 * B:MIB + 8 * B] == b"A" * B


def test_a_virtualiser_killed_at_any_write_loses_and_repeats_no_request(rig: BlkRig) -> None:
    """Killed just before each of its writes to shared memory during a burst from both clients and
    restarted: every request is answered exactly once (its ledger maps the driver's answers)."""
    a, b = rig.clients["a"], rig.clients["b"]

    def burst() -> dict[str, set[int]]:
        ids = {"a": {a.read(i * B, i, 1) for i in range(4)} | {a.flush()},  # type: ignore[arg-type]
               "b": {b.write(i * B, 20 + i, 1) for i in range(3)} | {b.read(0, 99, 1)}}  # type: ignore[arg-type]
        rig.kick("a", "b")
        return ids

    def answered(ids: dict[str, set[int]]) -> None:
        for name, client in (("a", a), ("b", b)):
            assert {d.id for d in client.completions()} == ids[name]
        assert not rig.refused, f"a response came twice or unasked: {rig.refused}"

    rig.bench.kill_at(VIRT_PD, 10**9)  # count its writes: a restart, then the burst
    ids = burst()
    rig.bench.run()
    answered(ids)
    positions = rig.bench.writes[VIRT_PD]
    assert positions > 10 and not rig.bench.killed
    for write in range(1, positions + 1):
        rig.bench.kill_at(VIRT_PD, write)
        ids = burst()
        rig.bench.run()
        if VIRT_PD not in rig.bench.components:
            rig.bench.restart(VIRT_PD)
            rig.bench.run()
        rig.bench.disarm()
        answered(ids)
    assert rig.bench.killed.count(VIRT_PD) >= positions // 2
