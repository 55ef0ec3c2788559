"""Partition tables (MBR and GPT), parsed without I/O.

A :class:`TableReader` says which byte range of the disk it needs next (:meth:`TableReader.need`)
and is fed it (:meth:`TableReader.feed`), so a virtualiser that can only read the disk through
asynchronous block requests drives it one read at a time; :func:`read_table` drives it from a
plain read function (an image file on the host). A table that is missing, malformed or corrupt
raises :class:`TableError` saying which check failed and with which values.

What is checked:

- MBR: the 0x55AA signature; the four primary entries (type 0 is empty); partition ``i`` is
  primary entry ``i`` (as sDDF numbers them); an entry of type 0xEE is a protective MBR: the disk
  is GPT. Entries are in sectors of the device's ``sector_size``.
- GPT: the header at LBA 1 ("EFI PART", header_size in [92, sector_size], CRC32 over
  header_size bytes with the CRC field zeroed, my_lba 1, alternate_lba the disk's last LBA, entry
  size 128·2^n), the entry array at PartitionEntryLBA (before first_usable) and its CRC32; the
  backup header at the last LBA (valid by the same checks, my_lba/alternate_lba crossed, the same
  disk GUID, usable range, entry count, entry size and entry array CRC) and the backup entry
  array's CRC32. Partition ``i`` is entry ``i``; an all-zero type GUID is an unused entry.
- Both: used entries lie inside the disk (GPT: inside the usable range), are not empty and do not
  overlap each other or the table.

Whether a client may use a partition is :meth:`PartitionTable.refusal` (see there for what sDDF
does and where we differ).
"""
from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Callable, Generator, Mapping, NamedTuple

from sddf.blk.queue import BLK_TRANSFER_SIZE

MBR_SIZE = 512
MBR_SIGNATURE = b"\x55\xaa"
MBR_ENTRIES_OFFSET = 446
MBR_ENTRY = struct.Struct("<B3sB3sII")  # status, chs start, type, chs end, lba start, sectors
MBR_PRIMARY_ENTRIES = 4
MBR_TYPE_EMPTY = 0x00
MBR_TYPE_GPT = 0xEE

GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes the UEFI spec defines
GPT_CRC_OFFSET = 16
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")  # type guid, unique guid, first lba, last lba, attributes, name
GPT_MIN_ENTRY_SIZE = GPT_ENTRY.size
GPT_UNUSED = bytes(16)

#: how much a reader may ask for in one range unless told otherwise (a GPT's 128 entries are 16 KiB)
DEFAULT_MAX_READ = 64 * 1024


class TableError(ValueError):
    """The disk's partition table is missing, malformed or corrupt."""


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes of the disk from byte ``offset``."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    def blocks(self) -> tuple[int, int]:
        """(first block, count) of the BLK_TRANSFER_SIZE blocks that cover the range."""
        first = self.offset // BLK_TRANSFER_SIZE
        return first, -(-self.end // BLK_TRANSFER_SIZE) - first


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of its table: ``size`` bytes from byte ``start`` of the disk."""

    index: int
    start: int
    size: int
    type: str  # MBR: the type byte as "0x0c"; GPT: the type GUID
    name: str = ""  # GPT only

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def first_block(self) -> int:
        """The partition's first BLK_TRANSFER_SIZE block (exact only if its start is aligned)."""
        return self.start // BLK_TRANSFER_SIZE

    @property
    def blocks(self) -> int:
        """Whole BLK_TRANSFER_SIZE blocks in the partition (a partial last block is not usable)."""
        return self.size // BLK_TRANSFER_SIZE


@dataclass(frozen=True)
class PartitionTable:
    """A disk's partitions (used entries only, by index) and the disk size it was read against."""

    scheme: str  # "mbr" or "gpt"
    disk_size: int
    partitions: Mapping[int, Partition] = field(default_factory=dict)

    def refusal(self, index: int) -> str | None:
        """Why partition ``index`` cannot be given to a block client, or None if it can.

        sDDF (blk/components/partitioning.c) refuses an MBR partition whose start sector is not
        a multiple of BLK_TRANSFER_SIZE (and then gives no client anything); it does not check a
        GPT partition's start at all (its block offset is the start rounded down, so the client
        would reach into whatever precedes its partition), and it rounds a partition's size down
        to whole transfers. Here any partition (MBR or GPT) whose start is not a multiple of
        BLK_TRANSFER_SIZE is refused, for the clients given that partition only; a size that is
        not a multiple is rounded down as sDDF does (the last partial block is unreachable, never
        someone else's); a partition smaller than one transfer is refused.
        """
        p = self.partitions.get(index)
        if p is None:
            return (f"partition {index} does not exist (the disk's {self.scheme.upper()} table has "
                    f"partitions {sorted(self.partitions) or 'none'})")
        if p.start % BLK_TRANSFER_SIZE:
            return (f"partition {index} starts at byte {p.start}, which is not a multiple of the "
                    f"{BLK_TRANSFER_SIZE}-byte transfer size")
        if p.blocks == 0:
            return f"partition {index} is {p.size} bytes, less than one {BLK_TRANSFER_SIZE}-byte transfer"
        if p.end > self.disk_size:
            return f"partition {index} ends at byte {p.end}, past the end of the {self.disk_size}-byte disk"
        return None


class GptHeader(NamedTuple):
    signature: bytes
    revision: int
    header_size: int
    header_crc: int
    reserved: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int


#: what the backup header must share with the primary
GPT_SHARED_FIELDS = ("disk_guid", "first_usable", "last_usable", "num_entries", "entry_size", "entries_crc")


class TableReader:
    """Reads a disk's partition table a range at a time: ask :meth:`need`, :meth:`feed` it, repeat
    until :attr:`table` is set (``need`` is then None). ``feed`` raises :class:`TableError` when
    what it was fed shows the table is bad. ``max_read`` bounds the blocks any one range covers
    (what the caller can read at once)."""

    def __init__(self, disk_size: int, sector_size: int, max_read: int = DEFAULT_MAX_READ) -> None:
        if sector_size < MBR_SIZE or sector_size & (sector_size - 1):
            raise ValueError(f"sector size {sector_size}: must be a power of two of at least {MBR_SIZE}")
        if disk_size < 2 * sector_size:
            raise TableError(f"the disk is {disk_size} bytes: too small to hold a partition table")
        if max_read < BLK_TRANSFER_SIZE:
            raise ValueError(f"max_read {max_read}: must be at least one transfer ({BLK_TRANSFER_SIZE})")
        self.disk_size = disk_size
        self.sector_size = sector_size
        self.max_read = max_read
        self.last_lba = disk_size // sector_size - 1
        self.table: PartitionTable | None = None
        self._extents: list[tuple[int, bytes]] = []  # everything fed so far, by offset
        self._steps = self._parse()
        self._need: ByteRange | None = next(self._steps)

    def need(self) -> ByteRange | None:
        """The range to read next, or None once the table is read."""
        return self._need

    def feed(self, offset: int, data: bytes) -> None:
        """Bytes of the disk from ``offset``: they must cover the range :meth:`need` asked for
        (they may cover more, which later steps then need not ask for)."""
        need = self._need
        if need is None or offset > need.offset or offset + len(data) < need.end:
            raise ValueError(f"fed bytes [{offset}, {offset + len(data)}) do not cover the range needed: {need}")
        self._extents.append((offset, bytes(data)))
        while self._need is not None:
            got = self._cached(self._need)
            if got is None:
                return
            try:
                self._need = self._steps.send(got)
            except StopIteration as done:
                self.table, self._need = done.value, None
            except TableError:
                self._need = None  # nothing more to read of a bad table
                raise

    def _cached(self, want: ByteRange) -> bytes | None:
        for at, data in self._extents:
            if at <= want.offset and want.end <= at + len(data):
                return data[want.offset - at:want.end - at]
        return None

    def _range(self, offset: int, length: int, what: str) -> ByteRange:
        """A range the caller can read in one go, or a TableError naming ``what`` it is."""
        r = ByteRange(offset, length)
        if r.end > self.disk_size:
            raise TableError(f"the {what} at bytes [{offset}, {r.end}) lies past the end of the "
                             f"{self.disk_size}-byte disk")
        if r.blocks()[1] * BLK_TRANSFER_SIZE > self.max_read:
            raise TableError(f"the {what} ({length} bytes at byte {offset}) is larger than the "
                             f"{self.max_read} bytes that can be read at once")
        return r

    # ---- the steps ------------------------------------------------------------------------
    def _parse(self) -> Generator[ByteRange, bytes, PartitionTable]:
        mbr = yield ByteRange(0, MBR_SIZE)
        entries = parse_mbr(mbr)
        if not any(kind == MBR_TYPE_GPT for kind, _, _ in entries):
            return self._mbr_table(entries)
        ss = self.sector_size
        primary = check_gpt_header((yield self._range(ss, ss, "primary GPT header")), "primary", 1, ss, self.last_lba)
        array = yield self._entries_range(primary, "primary")
        check_crc(array, primary.entries_crc, "primary GPT entry array")
        backup_at = self.last_lba * ss
        backup = check_gpt_header((yield self._range(backup_at, ss, "backup GPT header")), "backup",
                                  self.last_lba, ss, self.last_lba)
        check_backup_agrees(primary, backup)
        backup_array = yield self._entries_range(backup, "backup")
        check_crc(backup_array, backup.entries_crc, "backup GPT entry array")
        return self._gpt_table(primary, array)

    def _entries_range(self, header: GptHeader, which: str) -> ByteRange:
        return self._range(header.entries_lba * self.sector_size, header.num_entries * header.entry_size,
                           f"{which} GPT entry array")

    def _mbr_table(self, entries: list[tuple[int, int, int]]) -> PartitionTable:
        ss = self.sector_size
        parts = {}
        for i, (kind, lba, sectors) in enumerate(entries):
            if kind == MBR_TYPE_EMPTY:
                continue
            if lba == 0:
                raise TableError(f"MBR partition {i} starts at LBA 0, on the MBR itself")
            if sectors == 0:
                raise TableError(f"MBR partition {i} (type {kind:#04x}) has 0 sectors")
            parts[i] = Partition(i, lba * ss, sectors * ss, f"{kind:#04x}")
        return PartitionTable("mbr", self.disk_size, check_disjoint(parts))

    def _gpt_table(self, header: GptHeader, array: bytes) -> PartitionTable:
        ss = self.sector_size
        parts = {}
        for i in range(header.num_entries):
            kind, _unique, first, last, _attrs, name = GPT_ENTRY.unpack_from(array, i * header.entry_size)
            if kind == GPT_UNUSED:
                continue
            if not header.first_usable <= first <= last <= header.last_usable:
                raise TableError(f"GPT partition {i} spans LBAs {first}..{last}, outside the usable "
                                 f"LBAs {header.first_usable}..{header.last_usable} (or ends before it starts)")
            parts[i] = Partition(i, first * ss, (last - first + 1) * ss, str(uuid.UUID(bytes_le=kind)),
                                 name.decode("utf-16-le", "replace").split("\0", 1)[0])
        return PartitionTable("gpt", self.disk_size, check_disjoint(parts))


def parse_mbr(sector: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four primary entries of an MBR sector."""
    if sector[510:512] != MBR_SIGNATURE:
        raise TableError(f"no partition table: sector 0 ends in {sector[510:512].hex()}, "
                         f"not the MBR signature {MBR_SIGNATURE.hex()}")
    entries = []
    for i in range(MBR_PRIMARY_ENTRIES):
        _status, _chs, kind, _chs_end, lba, sectors = MBR_ENTRY.unpack_from(sector, MBR_ENTRIES_OFFSET + 16 * i)
        entries.append((kind, lba, sectors))
    return entries


def check_gpt_header(raw: bytes, which: str, lba: int, sector_size: int, last_lba: int) -> GptHeader:
    """The GPT header in sector ``raw`` read from ``lba`` of a disk whose last LBA is ``last_lba``,
    checked on its own."""
    h = GptHeader(*GPT_HEADER.unpack_from(raw, 0))
    where = f"the {which} GPT header (LBA {lba})"
    if h.signature != GPT_SIGNATURE:
        raise TableError(f"{where} has signature {h.signature!r}, not {GPT_SIGNATURE!r}")
    if not GPT_HEADER.size <= h.header_size <= sector_size:
        raise TableError(f"{where} has header_size {h.header_size}, outside [{GPT_HEADER.size}, "
                         f"{sector_size}]")
    body = bytearray(raw[:h.header_size])
    body[GPT_CRC_OFFSET:GPT_CRC_OFFSET + 4] = bytes(4)
    crc = zlib.crc32(body)
    if crc != h.header_crc:
        raise TableError(f"{where} fails its CRC32: it records {h.header_crc:#010x}, its bytes give {crc:#010x}")
    other = last_lba if lba == 1 else 1
    if h.my_lba != lba or h.alternate_lba != other:
        raise TableError(f"{where} says it is at LBA {h.my_lba} with its alternate at LBA {h.alternate_lba}; "
                         f"expected {lba} and {other} (the disk's last LBA is {last_lba})")
    multiple = h.entry_size // GPT_MIN_ENTRY_SIZE
    if h.entry_size % GPT_MIN_ENTRY_SIZE or multiple < 1 or multiple & (multiple - 1):
        raise TableError(f"{where} has entry_size {h.entry_size}, not 128 times a power of two")
    if h.num_entries < 1:
        raise TableError(f"{where} has no partition entries")
    array_sectors = -(-h.num_entries * h.entry_size // sector_size)
    if not 1 < h.first_usable <= h.last_usable + 1 or h.last_usable >= last_lba:
        raise TableError(f"{where} has usable LBAs {h.first_usable}..{h.last_usable}, which do not lie "
                         f"between the headers (LBAs 1 and {last_lba})")
    low, high = (2, h.first_usable) if lba == 1 else (h.last_usable + 1, last_lba)
    if not (low <= h.entries_lba and h.entries_lba + array_sectors <= high):
        raise TableError(f"{where} puts its {h.num_entries} entries of {h.entry_size} bytes at LBA "
                         f"{h.entries_lba}, outside LBAs {low}..{high - 1}")
    return h


def check_backup_agrees(primary: GptHeader, backup: GptHeader) -> None:
    """The backup header describes the same table as the primary."""
    for name in GPT_SHARED_FIELDS:
        mine, theirs = getattr(primary, name), getattr(backup, name)
        if mine != theirs:
            show = (lambda v: str(uuid.UUID(bytes_le=v))) if name == "disk_guid" else repr
            raise TableError(f"the backup GPT header does not match the primary: {name} is "
                             f"{show(theirs)} in the backup, {show(mine)} in the primary")


def check_crc(data: bytes, recorded: int, what: str) -> None:
    crc = zlib.crc32(data)
    if crc != recorded:
        raise TableError(f"the {what} fails its CRC32: its header records {recorded:#010x}, its bytes give {crc:#010x}")


def check_disjoint(parts: dict[int, Partition]) -> dict[int, Partition]:
    """``parts``, if no two of them overlap."""
    ordered = sorted(parts.values(), key=lambda p: p.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            raise TableError(f"partitions {a.index} (bytes [{a.start}, {a.end})) and {b.index} "
                             f"(bytes [{b.start}, {b.end})) overlap")
    return parts


def read_table(read: Callable[[int, int], bytes], disk_size: int, sector_size: int = 512,
               max_read: int = DEFAULT_MAX_READ) -> PartitionTable:
    """The partition table of a disk that ``read(offset, length)`` reads synchronously."""
    reader = TableReader(disk_size, sector_size, max_read)
    while (need := reader.need()) is not None:
        reader.feed(need.offset, read(need.offset, need.length))
    assert reader.table is not None
    return reader.table
