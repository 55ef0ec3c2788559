"""Byte-layout conformance with C: sDDF's structs as gcc lays them out are what sddf.queue uses.

tests/c/layouts.c declares sDDF's structs from the layouts in sddf-facts.md. Its
``offsets`` mode prints offsetof/sizeof of every field, checked against that table and
against the Python modules' constants. Its ``write``/``read`` modes put a queue state into
(or print it from) a shared memfd region, in the text format of :func:`render`; Python
producers and consumers do the same, and each side must read exactly what the other wrote.
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest

from helpers.regions import Resources, scoped_resources
from sddf import atomic
from sddf.blk import queue as blk
from sddf.net import queue as net
from sddf.serial import queue as serial
from sddf.blk.queue import (BlkReq, BlkReqCode, BlkResp, BlkRespStatus, BlkStorageInfo, ReqConsumer,
                            ReqProducer, RespConsumer, RespProducer, read_storage_info, write_storage_info)
from sddf.net.queue import NetBuffDesc, NetConsumer, NetProducer
from sddf.queue.ring import Layout, RingEnd
from sddf.serial.queue import SerialConsumer, SerialProducer
from sddf.shm import Region

pytestmark = pytest.mark.timeout(30)

C_SOURCE = Path(__file__).parent / "c" / "layouts.c"
FACTS_DOC = Path("/work/shared/reference/sddf-facts.md")


class StructLayout(NamedTuple):
    size: int
    fields: dict[str, tuple[int, int]]  # field -> (offset, size); for a flexible array, its element size


# sddf-facts.md, "Byte layouts": struct -> (sizeof, {field: offset}).
FACTS: dict[str, tuple[int, dict[str, int]]] = {
    "net_buff_desc_t": (16, {"io_or_offset": 0, "len": 8, "oid": 10}),
    "net_queue_t": (8, {"tail": 0, "head": 2, "consumer_signalled": 4, "buffers": 8}),
    "blk_req_t": (32, {"code": 0, "io_or_offset": 8, "block_number": 16, "count": 24, "id": 28}),
    "blk_resp_t": (12, {"status": 0, "success_count": 4, "id": 8}),
    "blk_req_queue_t": (16, {"head": 0, "tail": 4, "plugged": 8, "buffers": 16}),
    "blk_resp_queue_t": (8, {"head": 0, "tail": 4, "buffers": 8}),
    "blk_storage_info_t": (88, {"serial_number": 0, "read_only": 64, "ready": 65, "sector_size": 66,
                                "block_size": 68, "queue_depth": 70, "cylinders": 72, "heads": 74,
                                "blocks": 76, "capacity": 80}),
    "serial_queue_t": (12, {"tail": 0, "head": 4, "producer_signalled": 8}),
}


# ---- the C program -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layouts_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no C compiler: gcc not found")
    binary = tmp_path_factory.mktemp("c") / "layouts"
    subprocess.run([gcc, "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(C_SOURCE)],
                   check=True)
    return binary


@pytest.fixture(scope="module")
def c_layouts(layouts_bin: Path) -> dict[str, StructLayout]:
    out = subprocess.run([str(layouts_bin), "offsets"], check=True, capture_output=True, text=True).stdout
    layouts: dict[str, StructLayout] = {}
    for kind, name, *numbers in (line.split() for line in out.splitlines()):
        if kind == "struct":
            layouts[name] = StructLayout(int(numbers[0]), {})
        else:
            field, offset, size = numbers
            layouts[name].fields[field] = (int(offset), int(size))
    return layouts


# ---- the same layouts, from the Python modules' constants ------------------------------------
def format_fields(fmt: str, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """(offset, size) of each non-padding item of a little-endian struct format, named in order."""
    spans, offset = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<")):
        size = struct.calcsize(f"<{count}{code}")
        if code != "x":
            assert code == "s" or not count, f"{count}{code}: one field per item expected"
            spans.append((offset, size))
        offset += size
    return dict(zip(names, spans, strict=True))


def ring_fields(layout: Layout, flag: str | None = None) -> dict[str, tuple[int, int]]:
    width = layout.index_bits // 8
    fields = {"head": (layout.head_offset, width), "tail": (layout.tail_offset, width)}
    assert (flag is None) == (layout.flag_offset is None)
    if flag is not None:
        fields[flag] = (layout.flag_offset, 4)
    return fields


def python_layouts() -> dict[str, StructLayout]:
    req, resp = blk.REQ_FORMAT, blk.RESP_FORMAT
    return {
        "net_buff_desc_t": StructLayout(net.DESC_SIZE, format_fields(net.FORMAT.body, NetBuffDesc._fields)),
        "net_queue_t": StructLayout(net.HEADER_SIZE, {**ring_fields(net.LAYOUT, "consumer_signalled"),
                                                      "buffers": (net.FORMAT.header_size, net.DESC_SIZE)}),
        "blk_req_t": StructLayout(req.size, format_fields(req.body, BlkReq._fields)),
        "blk_resp_t": StructLayout(resp.size, format_fields(resp.body, BlkResp._fields)),
        "blk_req_queue_t": StructLayout(req.header_size, {**ring_fields(blk.LAYOUT), "plugged": (blk.PLUGGED_OFFSET, 1),
                                                          "buffers": (req.header_size, req.size)}),
        "blk_resp_queue_t": StructLayout(resp.header_size, {**ring_fields(blk.LAYOUT),
                                                            "buffers": (resp.header_size, resp.size)}),
        "blk_storage_info_t": StructLayout(blk.STORAGE_INFO_SIZE, {
            **format_fields(blk.STORAGE_INFO_STRUCT.format, BlkStorageInfo._fields),
            "ready": (blk.READY_OFFSET, 1)}),
        "serial_queue_t": StructLayout(serial.HEADER_SIZE, ring_fields(serial.LAYOUT, "producer_signalled")),
    }


def offsets_only(layouts: dict[str, StructLayout]) -> dict[str, tuple[int, dict[str, int]]]:
    return {name: (s.size, {f: off for f, (off, _) in s.fields.items()}) for name, s in layouts.items()}


# ---- (a) offsets and sizes --------------------------------------------------------------------
def test_c_layouts_match_the_sddf_facts_table(c_layouts: dict[str, StructLayout]) -> None:
    assert offsets_only(c_layouts) == FACTS


def test_python_constants_match_c_layouts(c_layouts: dict[str, StructLayout]) -> None:
    python = python_layouts()
    for name in c_layouts:
        assert python[name] == c_layouts[name], name


@pytest.mark.skipif(not FACTS_DOC.exists(), reason=f"{FACTS_DOC} is not on this machine")
def test_facts_transcribe_the_reference_table() -> None:
    rows = re.findall(r"^\| (\w+)[^|]*\| (\d+) \| ([^|]+) \|$", FACTS_DOC.read_text(), re.M)
    table = {name: (int(size), {f: int(off) for f, off in re.findall(r"(\w+) (\d+)", re.sub(r"\([^)]*\)", "", cells))})
             for name, size, cells in rows}
    assert table == FACTS


# ---- (b, c) a queue state written by one side, read by the other -------------------------------
NET_CAP, BLK_CAP, SERIAL_CAP = 8, 8, 64
SECTION_SIZE = 4096  # the section order and size of tests/c/layouts.c (enum section)
SECTIONS = ("net", "req", "resp", "info", "serial", "serial_data")


@dataclass(frozen=True)
class Scenario:
    """Everything both sides write and read; indices start near their wrap points."""

    net_head: int = 65533
    net_descs: tuple[tuple, ...] = (NetBuffDesc(0x1_0000_0800, 1514, 63), NetBuffDesc(0x800, 0, 0),
                                    NetBuffDesc(0xFFFF_FFFF_FFFF_F800, 2048, 42), NetBuffDesc(0x1000, 60, 1),
                                    NetBuffDesc(0x7FFF_0000, 1, 5))
    net_signalled: int = 0
    req_head: int = 2**32 - 3
    requests: tuple[tuple, ...] = (BlkReq(BlkReqCode.READ, 0x1_2345_6000, 2**40 + 7, 8, 0xDEADBEEF),
                                   BlkReq(BlkReqCode.WRITE, 0x1000, 3, 65535, 1),
                                   BlkReq(BlkReqCode.FLUSH, 0, 0, 0, 2**31),
                                   BlkReq(BlkReqCode.BARRIER, 0, 0, 0, 7))
    plugged: int = 1
    resp_head: int = 2**32 - 2
    responses: tuple[tuple, ...] = (BlkResp(BlkRespStatus.OK, 8, 0xDEADBEEF),
                                    BlkResp(BlkRespStatus.ERR_IO, 65535, 1),
                                    BlkResp(BlkRespStatus.ERR_NO_DEVICE, 0, 2**31))
    info: BlkStorageInfo | None = BlkStorageInfo(b"PYSDDF-0042", False, 512, 4096, 128, 1023, 255, 63, 2**33 + 5)
    serial_head: int = 2**32 - 10
    serial_data: bytes = b"hello\x00\xff, serial!\x7f\x80\x01\x02"
    serial_signalled: int = 1


SCENARIO = Scenario()


def render(s: Scenario) -> str:
    """The text format of tests/c/layouts.c: one record per line, tails computed from heads."""
    def line(kw: str, *values: int) -> str:
        return " ".join([kw, *(str(int(v)) for v in values)])

    lines = [line("net", (s.net_head + len(s.net_descs)) & 0xFFFF, s.net_head, s.net_signalled)]
    lines += [line("desc", *d) for d in s.net_descs]
    lines.append(line("req", s.req_head, (s.req_head + len(s.requests)) & 0xFFFF_FFFF, s.plugged))
    lines += [line("request", *r) for r in s.requests]
    lines.append(line("resp", s.resp_head, (s.resp_head + len(s.responses)) & 0xFFFF_FFFF))
    lines += [line("response", *r) for r in s.responses]
    if s.info is None:
        lines.append("info (not ready)")
    else:
        serial_number, read_only, *sizes = s.info
        lines.append(line(f"info {serial_number.decode()}", read_only, 1, *sizes))  # 1: ready
    lines.append(line("serial", (s.serial_head + len(s.serial_data)) & 0xFFFF_FFFF, s.serial_head,
                      s.serial_signalled) + "".join(f" {b:02x}" for b in s.serial_data))
    return "\n".join(lines) + "\n"


def sections(region: Region) -> dict[str, memoryview]:
    return {name: region.view[i * SECTION_SIZE:(i + 1) * SECTION_SIZE] for i, name in enumerate(SECTIONS)}


def preset(buffer: memoryview, layout: Layout, index: int) -> None:
    """Put both indices of an empty queue at ``index`` before anyone attaches."""
    ptr = atomic.pointer(buffer)
    for offset in (layout.head_offset, layout.tail_offset):
        atomic.STORES[layout.index_bits](ptr, offset, index)


def set_flag(buffer: memoryview, layout: Layout, value: int) -> None:
    """Store a queue's signal flag as its waiting end would (0: signal requested)."""
    assert layout.flag_offset is not None
    atomic.store_release_u32(atomic.pointer(buffer), layout.flag_offset, value)


def flag_value(end: RingEnd) -> int:
    return 0 if end.signal_requested() else 1


def python_write(_binary: Path, region: Region) -> None:
    """Producers write SCENARIO, as a driver and its clients would."""
    s, sec = SCENARIO, sections(region)
    preset(sec["net"], net.LAYOUT, s.net_head)
    net_producer = NetProducer("net", sec["net"], NET_CAP)
    assert net_producer.enqueue_many(s.net_descs) == len(s.net_descs)
    set_flag(sec["net"], net.LAYOUT, s.net_signalled)
    preset(sec["req"], blk.LAYOUT, s.req_head)
    req = ReqProducer("req", sec["req"], BLK_CAP)
    assert req.enqueue_many(s.requests) == len(s.requests)
    if s.plugged:
        req.plug()
    preset(sec["resp"], blk.LAYOUT, s.resp_head)
    assert RespProducer("resp", sec["resp"], BLK_CAP).enqueue_many(s.responses) == len(s.responses)
    assert s.info is not None
    write_storage_info(sec["info"], s.info)
    preset(sec["serial"], serial.LAYOUT, s.serial_head)
    serial_producer = SerialProducer("serial", sec["serial"], sec["serial_data"], SERIAL_CAP)
    assert serial_producer.enqueue(s.serial_data) == len(s.serial_data)
    set_flag(sec["serial"], serial.LAYOUT, s.serial_signalled)


def python_read(_binary: Path, region: Region) -> str:
    """Consumers read everything there is; the state they saw, rendered."""
    sec = sections(region)
    net_consumer = NetConsumer("net", sec["net"], NET_CAP)
    req = ReqConsumer("req", sec["req"], BLK_CAP)
    resp = RespConsumer("resp", sec["resp"], BLK_CAP)
    serial_consumer = SerialConsumer("serial", sec["serial"], sec["serial_data"], SERIAL_CAP)
    seen = Scenario(
        net_head=net_consumer.index, net_descs=tuple(net_consumer.dequeue_many()),
        net_signalled=flag_value(net_consumer),
        req_head=req.index, requests=tuple(req.dequeue_many()), plugged=int(req.plugged()),
        resp_head=resp.index, responses=tuple(resp.dequeue_many()),
        info=read_storage_info(sec["info"]),
        serial_head=serial_consumer.index, serial_data=serial_consumer.dequeue(),
        serial_signalled=flag_value(serial_consumer))
    return render(seen)


def run_c(binary: Path, mode: str, region: Region, stdin: str = "") -> str:
    """Run ``layouts MODE`` on the region (its memfd, by /proc path in the child)."""
    argv = [str(binary), mode, f"/proc/self/fd/{region.fd}", str(NET_CAP), str(BLK_CAP), str(SERIAL_CAP)]
    return subprocess.run(argv, input=stdin, pass_fds=(region.fd,), check=True, capture_output=True, text=True,
                          timeout=10).stdout


def c_write(binary: Path, region: Region) -> None:
    run_c(binary, "write", region, render(SCENARIO))


def c_read(binary: Path, region: Region) -> str:
    return run_c(binary, "read", region)


@pytest.fixture
def resources(request: pytest.FixtureRequest) -> Iterator[Resources]:
    with scoped_resources(request) as r:
        yield r


def new_region(resources: Resources, name: str) -> Region:
    return resources.region(name, len(SECTIONS) * SECTION_SIZE)


@pytest.fixture
def region(resources: Resources) -> Region:
    return new_region(resources, "layout")


@pytest.mark.parametrize("write, read", [(c_write, python_read), (python_write, c_read), (c_write, c_read)],
                         ids=["c-writes-python-reads", "python-writes-c-reads", "c-writes-c-reads"])
def test_each_side_reads_what_the_other_wrote(layouts_bin: Path, region: Region,
                                              write: Callable[[Path, Region], None],
                                              read: Callable[[Path, Region], str]) -> None:
    write(layouts_bin, region)
    assert read(layouts_bin, region) == render(SCENARIO)


def test_c_and_python_write_identical_bytes(layouts_bin: Path, resources: Resources) -> None:
    by_c, by_python = new_region(resources, "c"), new_region(resources, "python")
    c_write(layouts_bin, by_c)
    python_write(layouts_bin, by_python)
    for name, c_bytes in sections(by_c).items():
        assert c_bytes.tobytes() == sections(by_python)[name].tobytes(), name
