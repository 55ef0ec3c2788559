"""Disk images for the block system: MBR or GPT partition tables and FAT-formatted partitions.

Sans-I/O where it can be: :func:`plan` lays partitions out (each starting on a 1 MiB boundary, in
order) and checks that they fit; :func:`mbr` and :func:`gpt` turn a layout into the bytes of the
table and where they go; :func:`fat_type_of` reads a FAT boot sector. :func:`build` is the I/O:
a sparse image file holding the table, with its FAT partitions formatted by pyfatfs.

Sizes are bytes, multiples of BLK_TRANSFER_SIZE (4 KiB): sDDF moves whole 4 KiB blocks, and its
virtualiser refuses a partition that does not start on one and reads GPT's backup header as the
last sector of the disk's last block.
"""
from __future__ import annotations

import os
import re
import secrets
import struct
import zlib
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple
from uuid import UUID, uuid4

from pyfatfs.PyFat import PyFat
from pyfatfs._exceptions import PyFATException

from sddf.blk.partitions import (GPT_ENTRY, GPT_HEADER, GPT_SIGNATURE, MBR_ENTRIES_OFFSET, MBR_ENTRY,
                                 MBR_PRIMARY_ENTRIES, MBR_SIGNATURE, MBR_TYPE_GPT)
from sddf.blk.queue import BLK_TRANSFER_SIZE

SECTOR = 512  # the logical sector both tables count in (LBA)
ALIGN = 1 << 20  # partitions start on 1 MiB boundaries, as fdisk and sgdisk place them
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
REST = "rest"  # a partition size meaning "whatever is left"

Table = Literal["mbr", "gpt"]
FatType = Literal["FAT12", "FAT16", "FAT32"]
Writes = list[tuple[int, bytes]]  # (byte offset in the image, bytes to put there)

MBR_MAX_SECTORS = 0xFFFFFFFF  # its 32-bit LBA fields reach 2 TiB
MBR_TYPES: dict[FatType | None, int] = {"FAT12": 0x01, "FAT16": 0x06, "FAT32": 0x0C, None: 0x83}
CHS_HEADS, CHS_SECTORS = 255, 63  # the geometry every LBA-era tool assumes

GPT_REVISION = 0x00010000
GPT_ENTRIES = 128
GPT_ARRAY_SECTORS = GPT_ENTRIES * GPT_ENTRY.size // SECTOR  # 32
GPT_BASIC_DATA = UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")  # Microsoft basic data: FAT
GPT_LINUX_DATA = UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")  # Linux filesystem data

# mkfs.fat's automatic choice, measured with dosfstools 4.2: FAT12 while 2 KiB clusters number
# fewer than 4085 (up to 8204 KiB), FAT32 from 512 MiB, FAT16 between.
FAT12_MAX_SIZE = 8204 << 10
FAT32_MIN_SIZE = 512 << 20
FAT_MIN_SIZE = 64 << 10  # pyfatfs formats tinier ones but overfills them (seen at 12 KiB)
FAT_MAX_SIZE = 32 << 30  # pyfatfs has no FAT32 cluster size beyond 32 GiB
FAT_LABEL = "SDDF"
FSINFO_FREE_COUNT = 488  # in FAT32's FSInfo sector: free clusters, 0xFFFFFFFF = unknown
PYFAT_TYPES = {"FAT12": PyFat.FAT_TYPE_FAT12, "FAT16": PyFat.FAT_TYPE_FAT16, "FAT32": PyFat.FAT_TYPE_FAT32}


class ImageError(ValueError):
    """A disk image that cannot be made or read as asked; the message says why."""


def human(size: int) -> str:
    """``size`` bytes in the largest binary unit that divides it (64 MiB, 1 GiB, 4100 KiB)."""
    for unit in "TGMK":
        if size and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} B"


def parse_size(text: str) -> int:
    """Bytes in a size such as 4096, 512K, 64M, 1G or 2GiB (binary units); a multiple of 4 KiB."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ImageError(f"not a size: {text!r} (give bytes, or a number with K, M, G or T: powers of 1024)")
    size = int(match[1]) * UNITS[match[2].upper()]
    if size == 0 or size % BLK_TRANSFER_SIZE:
        raise ImageError(f"size {text!r} is not a positive multiple of 4 KiB (sDDF moves 4 KiB blocks)")
    return size


@dataclass(frozen=True)
class PartitionSpec:
    """What the user asked for one partition: a size (None: the rest of the disk) and whether FAT."""

    size: int | None
    fat: bool = False

    @classmethod
    def parse(cls, text: str) -> PartitionSpec:
        """``SIZE`` or ``SIZE,fat`` (FAT12/16/32 chosen by size, as mkfs.fat would); SIZE may be ``rest``."""
        size_text, comma, fs = text.partition(",")
        if comma and fs.strip().lower() != "fat":
            raise ImageError(f"partition {text!r}: unknown file system {fs.strip()!r} "
                             "(give SIZE,fat for FAT, or SIZE alone for an unformatted partition)")
        return cls(None if size_text.strip().lower() == REST else parse_size(size_text), bool(comma))


@dataclass(frozen=True)
class PlannedPartition:
    """A partition as mkimage lays it out: where it starts, its size (bytes) and its FAT type, if formatted."""

    start: int
    size: int
    fat: FatType | None

    @property
    def first_lba(self) -> int:
        return self.start // SECTOR

    @property
    def sectors(self) -> int:
        return self.size // SECTOR


def fat_type_for(size: int) -> FatType:
    """The FAT type mkfs.fat gives a file system of ``size`` bytes when not told which."""
    return "FAT12" if size <= FAT12_MAX_SIZE else "FAT16" if size < FAT32_MIN_SIZE else "FAT32"


def usable_end(disk_size: int, table: Table) -> int:
    """The byte where partitions must end: the disk's end, or for GPT its backup entry array."""
    return disk_size - (GPT_ARRAY_SECTORS + 1) * SECTOR if table == "gpt" else disk_size


def plan(disk_size: int, table: Table, specs: list[PartitionSpec]) -> list[PlannedPartition]:
    """Lay ``specs`` out in order, each on the next 1 MiB boundary; refuse what does not fit."""
    if table not in ("mbr", "gpt"):
        raise ImageError(f"unknown partition table {table!r} (mbr or gpt)")
    if not specs:
        raise ImageError("no partitions: give at least one --partition SIZE[,fat]")
    limit = MBR_PRIMARY_ENTRIES if table == "mbr" else GPT_ENTRIES
    if len(specs) > limit:
        raise ImageError(f"{len(specs)} partitions: an {table.upper()} table holds at most {limit}"
                         + (" (primary partitions; use --table gpt for more)" if table == "mbr" else ""))
    if any(spec.size is None for spec in specs[:-1]):
        raise ImageError(f"only the last partition may be {REST!r} (what is left of the disk)")
    end = usable_end(disk_size, table)
    parts, start = [], ALIGN
    for number, spec in enumerate(specs):
        left = max(end - start, 0) // BLK_TRANSFER_SIZE * BLK_TRANSFER_SIZE
        size = left // ALIGN * ALIGN if spec.size is None else spec.size  # the rest ends on a boundary too
        if size == 0 or size > left:
            raise ImageError(f"partition {number} ({human(size) if size else REST}) does not fit: it would start "
                             f"at {human(start)} of the {human(disk_size)} disk, which leaves "
                             f"{human(left) if left else 'no room'} for it with {table.upper()}")
        if table == "mbr" and (start + size) // SECTOR > MBR_MAX_SECTORS:
            raise ImageError(f"partition {number} ends past 2 TiB, beyond what MBR can address: use --table gpt")
        if spec.fat and not FAT_MIN_SIZE <= size <= FAT_MAX_SIZE:
            raise ImageError(f"partition {number}: a FAT partition must be {human(FAT_MIN_SIZE)} to "
                             f"{human(FAT_MAX_SIZE)}, not {human(size)}")
        parts.append(PlannedPartition(start, size, fat_type_for(size) if spec.fat else None))
        start = -(-(start + size) // ALIGN) * ALIGN
    return parts


# ---- tables ---------------------------------------------------------------------------------
def _chs(lba: int) -> bytes:
    """The 3-byte cylinder/head/sector address of ``lba``, clamped to the largest one (1023/254/63)."""
    cylinder, rest = divmod(lba, CHS_HEADS * CHS_SECTORS)
    head, sector = divmod(rest, CHS_SECTORS)
    if cylinder > 1023:
        cylinder, head, sector = 1023, CHS_HEADS - 1, CHS_SECTORS - 1
    return bytes([head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF])


def _mbr_entry(kind: int, first_lba: int, sectors: int) -> bytes:
    return MBR_ENTRY.pack(0, _chs(first_lba), kind, _chs(first_lba + sectors - 1), first_lba, sectors)


def _mbr_sector(entries: list[bytes], disk_signature: int) -> bytes:
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 440, disk_signature)
    body = b"".join(entries)
    sector[MBR_ENTRIES_OFFSET:MBR_ENTRIES_OFFSET + len(body)] = body
    sector[510:512] = MBR_SIGNATURE
    return bytes(sector)


def mbr(partitions: list[PlannedPartition], disk_signature: int) -> Writes:
    """An MS-DOS MBR with ``partitions`` as its primary entries, in order."""
    entries = [_mbr_entry(MBR_TYPES[p.fat], p.first_lba, p.sectors) for p in partitions]
    return [(0, _mbr_sector(entries, disk_signature))]


def _gpt_header(disk_lbas: int, backup: bool, disk_guid: UUID, array_crc: int) -> bytes:
    """The primary (LBA 1) or backup (last LBA) GPT header, with its CRC32."""
    mine, other = (disk_lbas - 1, 1) if backup else (1, disk_lbas - 1)
    array_lba = disk_lbas - 1 - GPT_ARRAY_SECTORS if backup else 2
    fields = [GPT_SIGNATURE, GPT_REVISION, GPT_HEADER.size, 0, 0, mine, other, 2 + GPT_ARRAY_SECTORS,
              disk_lbas - 2 - GPT_ARRAY_SECTORS, disk_guid.bytes_le, array_lba, GPT_ENTRIES, GPT_ENTRY.size,
              array_crc]
    fields[3] = zlib.crc32(GPT_HEADER.pack(*fields))
    return GPT_HEADER.pack(*fields).ljust(SECTOR, b"\0")


def gpt(disk_size: int, partitions: list[PlannedPartition], new_guid: Callable[[], UUID] = uuid4) -> Writes:
    """A protective MBR, the primary GPT header and entry array at LBA 1 and 2, and the backup entry
    array and header at the end of the disk; ``new_guid`` makes the disk's and each partition's GUID."""
    disk_lbas = disk_size // SECTOR
    disk_guid = new_guid()
    entries = b"".join(GPT_ENTRY.pack((GPT_BASIC_DATA if p.fat else GPT_LINUX_DATA).bytes_le, new_guid().bytes_le,
                                      p.first_lba, p.first_lba + p.sectors - 1, 0, b"")
                       for p in partitions).ljust(GPT_ARRAY_SECTORS * SECTOR, b"\0")
    array_crc = zlib.crc32(entries)
    protective = _mbr_sector([_mbr_entry(MBR_TYPE_GPT, 1, min(disk_lbas - 1, MBR_MAX_SECTORS))], 0)
    primary = protective + _gpt_header(disk_lbas, False, disk_guid, array_crc) + entries
    backup = entries + _gpt_header(disk_lbas, True, disk_guid, array_crc)
    return [(0, primary), (disk_size - len(backup), backup)]


def table_writes(table: Table, disk_size: int, partitions: list[PlannedPartition]) -> Writes:
    """The bytes of a fresh ``table`` for ``partitions``, with random identifiers."""
    if table == "gpt":
        return gpt(disk_size, partitions)
    return mbr(partitions, int.from_bytes(secrets.token_bytes(4), "little"))


# ---- FAT boot sectors -----------------------------------------------------------------------
class Bpb(NamedTuple):
    """The fields of a FAT boot sector's BIOS parameter block that we use."""

    per_sector: int
    per_cluster: int
    reserved: int
    fats: int
    root_entries: int
    total: int
    media: int
    fat_size: int
    fsinfo: int  # FAT32: the FSInfo sector
    backup: int  # FAT32: the sector of the boot sector's copy

    @classmethod
    def read(cls, boot: bytes) -> Bpb:
        per_sector, per_cluster, reserved, fats, root_entries, total16, media, fat16_size = \
            struct.unpack_from("<HBHBHHBH", boot, 11)
        total32, fat32_size = struct.unpack_from("<II", boot, 32)
        fsinfo, backup = struct.unpack_from("<HH", boot, 48)
        return cls(per_sector, per_cluster, reserved, fats, root_entries, total16 or total32, media,
                   fat16_size or fat32_size, fsinfo, backup)


def data_clusters(boot: bytes) -> int | None:
    """How many data clusters a FAT boot sector gives its volume (numbered from 2); None if it is
    not a FAT boot sector."""
    if len(boot) < SECTOR or boot[510:512] != MBR_SIGNATURE:
        return None
    bpb = Bpb.read(boot)
    if (bpb.per_sector not in (512, 1024, 2048, 4096) or not bpb.per_cluster
            or bpb.per_cluster & (bpb.per_cluster - 1) or not bpb.reserved or not bpb.fats or not bpb.fat_size):
        return None
    root_sectors = -(-bpb.root_entries * 32 // bpb.per_sector)
    data = bpb.total - bpb.reserved - bpb.fats * bpb.fat_size - root_sectors
    return data // bpb.per_cluster if data >= bpb.per_cluster else None


def fat_type_of(boot: bytes) -> FatType | None:
    """The FAT type of a boot sector, by its count of data clusters (Microsoft's FAT spec); None
    if it is not a FAT boot sector."""
    clusters = data_clusters(boot)
    if clusters is None:
        return None
    return "FAT12" if clusters < 4085 else "FAT16" if clusters < 65525 else "FAT32"


def mkfs_fixes(boot: bytes, hidden_sectors: int) -> Writes:
    """What pyfatfs's mkfs leaves wrong, put right (offsets within the partition): the boot sector
    (and FAT32's copy) gets 63 sectors per track, 255 heads and the sectors before the partition,
    as mkfs.fat writes them (pyfatfs writes zeros, which mtools refuses); a FAT12 FAT gets 0xFFF
    in its entry 1 (pyfatfs writes 0xFF0, which mtools refuses)."""
    bpb, kind = Bpb.read(boot), fat_type_of(boot)
    fixed = bytearray(boot[:SECTOR])
    struct.pack_into("<HHI", fixed, 24, CHS_SECTORS, CHS_HEADS, hidden_sectors)
    writes = [(sector * bpb.per_sector, bytes(fixed)) for sector in ([0, bpb.backup] if kind == "FAT32" else [0])]
    if kind == "FAT12":
        writes += [((bpb.reserved + i * bpb.fat_size) * bpb.per_sector, bytes([bpb.media, 0xFF, 0xFF]))
                   for i in range(bpb.fats)]
    return writes


def fsinfo_free_count_unknown(boot: bytes) -> Writes:
    """For FAT32: mark FSInfo's free-cluster count (and its copy's) unknown, to be counted by
    whoever mounts it next; pyfatfs writes files without updating it. Nothing for FAT12/16."""
    if fat_type_of(boot) != "FAT32":
        return []
    bpb = Bpb.read(boot)
    return [((base + bpb.fsinfo) * bpb.per_sector + FSINFO_FREE_COUNT, b"\xff\xff\xff\xff")
            for base in (0, bpb.backup)]


# ---- the image file -------------------------------------------------------------------------
def format_fat(path: str, part: PlannedPartition) -> None:
    """Make a ``part.fat`` file system in ``part`` of the image at ``path``. pyfatfs leaves the file
    ending where the partition does (it truncates to offset + size), so format in ascending order."""
    assert part.fat is not None
    fat = PyFat(offset=part.start)
    fat.mkfs(path, PYFAT_TYPES[part.fat], size=part.size, label=FAT_LABEL,
             volume_id=secrets.randbits(32) or 1)  # pyfatfs's default is the time: the same for all in a second
    fat.close()
    with open(path, "r+b") as image:
        boot = os.pread(image.fileno(), SECTOR, part.start)
        for offset, data in mkfs_fixes(boot, part.first_lba):
            os.pwrite(image.fileno(), data, part.start + offset)


def build(path: str, disk_size: int, table: Table, specs: list[PartitionSpec], force: bool = False
          ) -> list[PlannedPartition]:
    """Write a sparse image of ``disk_size`` bytes at ``path``: the FAT partitions formatted, then
    the table. Made beside ``path`` and moved there whole; an existing ``path`` only with ``force``."""
    if disk_size % BLK_TRANSFER_SIZE:
        raise ImageError(f"image size {disk_size} is not a multiple of 4 KiB")
    partitions = plan(disk_size, table, specs)
    if os.path.lexists(path) and not force:
        raise ImageError(f"{path} exists: give --force to replace it")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ImageError(f"{path} exists and is not a regular file: not replacing it")
    temp = os.path.join(os.path.dirname(os.path.abspath(path)),
                        f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        open(temp, "xb").close()
    except OSError as exc:
        raise ImageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        for part in partitions:
            if part.fat:
                format_fat(temp, part)
        with open(temp, "r+b") as image:
            image.truncate(disk_size)
            for offset, data in table_writes(table, disk_size, partitions):
                os.pwrite(image.fileno(), data, offset)
            os.fsync(image.fileno())
        _publish(temp, path, force)
    except (OSError, PyFATException) as exc:
        raise ImageError(f"cannot write {path}: {exc}") from None
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    return partitions


def _publish(temp: str, path: str, force: bool) -> None:
    """Move the finished image to ``path``: replacing it (``force``) or only if it still does not exist."""
    if force:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)
    except FileExistsError:
        raise ImageError(f"{path} exists: give --force to replace it") from None
