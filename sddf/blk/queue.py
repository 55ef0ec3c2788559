"""sDDF blk queues (include/sddf/blk/queue.h, storage_info.h): requests, responses, storage info.

Byte layout (little-endian, as gcc lays out sDDF's structs on x86-64):
request queue  {u32 head @0, u32 tail @4, bool plugged @8} then 32-byte requests from byte 16:
               {u32 code @0, u64 io_or_offset @8, u64 block_number @16, u16 count @24, u32 id @28}
response queue {u32 head @0, u32 tail @4} then 12-byte responses from byte 8:
               {u32 status @0, u16 success_count @4, u32 id @8}
storage info   88 bytes in its own page; ``ready`` (byte 65) is published last.
Indices are free-running u32; block numbers and counts are in BLK_TRANSFER_SIZE units.
"""
from __future__ import annotations

import struct
from enum import IntEnum
from operator import add, mul
from itertools import repeat
from typing import Any, NamedTuple

from sddf import atomic
from sddf.queue.entries import EntryConsumer, EntryFormat, EntryProducer, Validator, first_bad
from sddf.queue.ring import Layout, OnRefuse

BLK_TRANSFER_SIZE = 4096
LAYOUT = Layout(tail_offset=4, head_offset=0, index_bits=32)
REQ_FORMAT = EntryFormat("I4xQQH2xI", header_size=16)
RESP_FORMAT = EntryFormat("IH2xI", header_size=8)
PLUGGED_OFFSET = 8


class BlkReqCode(IntEnum):
    READ = 0
    WRITE = 1
    FLUSH = 2
    BARRIER = 3


class BlkRespStatus(IntEnum):
    OK = 0
    ERR_UNSPEC = 1
    ERR_INVALID_PARAM = 2
    ERR_IO = 3
    ERR_NO_DEVICE = 4


class BlkReq(NamedTuple):
    """A request; dequeues return plain tuples in this field order."""

    code: int
    io_or_offset: int
    block_number: int
    count: int
    id: int


class BlkResp(NamedTuple):
    """A response; dequeues return plain tuples in this field order."""

    status: int
    success_count: int
    id: int


def req_queue_size(capacity: int) -> int:
    return REQ_FORMAT.region_size(capacity)


def resp_queue_size(capacity: int) -> int:
    return RESP_FORMAT.region_size(capacity)


def request_validator(base: int, size: int) -> Validator:
    """Accept requests with a known code whose data (count transfers) lies inside [base, base+size)."""
    end = base + size
    last_code = max(BlkReqCode)

    def bad(code: int, offset: int, _block: int, count: int, _id: int) -> bool:
        if code > last_code:
            return True
        moves_data = code in (BlkReqCode.READ, BlkReqCode.WRITE)
        return moves_data and not (base <= offset and offset + count * BLK_TRANSFER_SIZE <= end)

    def validate(flat: tuple) -> tuple[int, str] | None:
        offsets, counts = flat[1::5], flat[3::5]
        if (max(flat[0::5]) <= last_code and min(offsets) >= base
                and max(map(add, offsets, map(mul, counts, repeat(BLK_TRANSFER_SIZE)))) <= end):
            return None
        i = first_bad(flat, 5, bad)
        if i is None:
            return None  # a FLUSH/BARRIER with an unused offset tripped the fast check
        code, offset, block, count, rid = flat[5 * i:5 * i + 5]
        return i, (f"request id={rid} code={code} io_or_offset={offset:#x} count={count} is not a "
                   f"known request inside [{base:#x}, {end:#x})")

    return validate


def response_validator(flat: tuple) -> tuple[int, str] | None:
    """Accept responses with a known status."""
    last = max(BlkRespStatus)
    if max(flat[0::3]) <= last:
        return None
    i = first_bad(flat, 3, lambda status, _n, _id: status > last)
    assert i is not None
    return i, f"response id={flat[3 * i + 2]} has unknown status {flat[3 * i]}"


class ReqProducer(EntryProducer):
    """A client's (or virtualiser's) end of a request queue."""

    def __init__(self, name: str, buffer: Any, capacity: int, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, REQ_FORMAT, on_refuse)

    def plug(self) -> None:
        """Stop the consumer taking requests (sDDF blk_queue_plug_req)."""
        atomic.store_release_u8(self._ptr, PLUGGED_OFFSET, 1)

    def unplug(self) -> None:
        atomic.store_release_u8(self._ptr, PLUGGED_OFFSET, 0)


class ReqConsumer(EntryConsumer):
    """A driver's (or virtualiser's) end of a request queue."""

    def __init__(self, name: str, buffer: Any, capacity: int,
                 validate: Validator | None = None, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, REQ_FORMAT, validate, on_refuse)

    def plugged(self) -> bool:
        return atomic.load_acquire_u8(self._ptr, PLUGGED_OFFSET) != 0


class RespProducer(EntryProducer):
    def __init__(self, name: str, buffer: Any, capacity: int, on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, RESP_FORMAT, on_refuse)


class RespConsumer(EntryConsumer):
    """The response end; ``validate`` (default: known statuses only) may be None for a consumer
    that checks each response itself, so one bad status does not stall the queue."""

    def __init__(self, name: str, buffer: Any, capacity: int, validate: Validator | None = response_validator,
                 on_refuse: OnRefuse | None = None) -> None:
        super().__init__(name, buffer, capacity, LAYOUT, RESP_FORMAT, validate, on_refuse)


# ---- storage info ---------------------------------------------------------------------------
STORAGE_INFO_STRUCT = struct.Struct("<64s?xHHHHHH2xQ")
STORAGE_INFO_SIZE = STORAGE_INFO_STRUCT.size
READY_OFFSET = 65
SERIAL_NUMBER_MAX = 63  # bytes of text: the field is a NUL-terminated char[64]


class BlkStorageInfo(NamedTuple):
    """What a block device tells its clients; ``capacity`` is in BLK_TRANSFER_SIZE units."""

    serial_number: bytes
    read_only: bool
    sector_size: int
    block_size: int
    queue_depth: int
    cylinders: int
    heads: int
    blocks: int
    capacity: int


def write_storage_info(buffer: Any, info: BlkStorageInfo) -> None:
    """Fill in the storage info, then publish ``ready`` with a store-release (a device already
    ready is not-ready meanwhile: a virtualiser sees ready → ready as not-ready → ready)."""
    if len(info.serial_number) > SERIAL_NUMBER_MAX or b"\0" in info.serial_number:
        raise ValueError(f"serial number {info.serial_number!r}: at most {SERIAL_NUMBER_MAX} bytes of text "
                         "without NUL (the field is NUL-terminated)")
    ptr = atomic.pointer(buffer)
    set_not_ready(buffer)
    STORAGE_INFO_STRUCT.pack_into(buffer, 0, *info)  # its pad byte is ``ready``: 0 until the store below
    atomic.store_release_u8(ptr, READY_OFFSET, 1)


def set_not_ready(buffer: Any) -> None:
    """The device is gone (or about to change): clients stop trusting the storage info."""
    atomic.store_release_u8(atomic.pointer(buffer), READY_OFFSET, 0)


class StorageInfoReader:
    """Reads one storage info page again and again (what a virtualiser does every pass)."""

    def __init__(self, buffer: Any) -> None:
        self._buffer, self._ptr = buffer, atomic.pointer(buffer)

    def read(self) -> BlkStorageInfo | None:
        """The storage info once the device has published it (and not taken it back), else None.
        The serial number is the text before its first NUL (a device may leave bytes after it)."""
        if not atomic.load_acquire_u8(self._ptr, READY_OFFSET):
            return None
        serial, *rest = STORAGE_INFO_STRUCT.unpack_from(self._buffer, 0)
        return BlkStorageInfo(serial.split(b"\0", 1)[0], *rest)


def read_storage_info(buffer: Any) -> BlkStorageInfo | None:
    """:meth:`StorageInfoReader.read`, once."""
    return StorageInfoReader(buffer).read()
