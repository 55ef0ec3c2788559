"""Disk images with MBR or GPT partition tables, built independently of ``sddf.blk`` (their own
struct layouts, from the UEFI spec and the MBR format), and the corruptions tests need."""
from __future__ import annotations

import struct
import uuid
import zlib

SECTOR = 512
MBR_ENTRY = struct.Struct("<B3sB3sII")
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
LINUX_DATA = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
DISK_GUID = uuid.UUID("5b1f9a2e-8c44-4d1a-9f0e-0123456789ab")


def mbr_image(disk_size: int, parts: list[tuple[int, int, int]], fill: bytes = b"") -> bytearray:
    """A disk of ``disk_size`` bytes (``fill`` repeated, else zeros) whose MBR has primary entries
    ``(type, first LBA, sectors)`` in order."""
    image = bytearray((fill * (disk_size // len(fill) + 1))[:disk_size]) if fill else bytearray(disk_size)
    image[:SECTOR] = bytes(SECTOR)
    for i, (kind, lba, sectors) in enumerate(parts):
        MBR_ENTRY.pack_into(image, 446 + 16 * i, 0, b"\0\0\0", kind, b"\0\0\0", lba, sectors)
    image[510:512] = b"\x55\xaa"
    return image


def gpt_image(disk_size: int, parts: list[tuple[int, int]], entries: int = 128, entry_size: int = 128,
              sector: int = SECTOR) -> bytearray:
    """A disk with a protective MBR and primary and backup GPTs whose used entries are the
    ``(first LBA, last LBA)`` of ``parts``, in order (entry ``i`` is partition ``i``)."""
    lbas = disk_size // sector
    array_sectors = -(-entries * entry_size // sector)
    image = mbr_image(disk_size, [(0xEE, 1, lbas - 1)])
    array = bytearray(entries * entry_size)
    for i, (first, last) in enumerate(parts):
        name = f"part{i}".encode("utf-16-le")
        GPT_ENTRY.pack_into(array, i * entry_size, LINUX_DATA.bytes_le, uuid.uuid4().bytes_le, first, last, 0, name)
    first_usable, last_usable = 2 + array_sectors, lbas - 2 - array_sectors
    image[2 * sector:2 * sector + len(array)] = array
    backup_array = (lbas - 1 - array_sectors) * sector
    image[backup_array:backup_array + len(array)] = array
    for mine, other, array_lba in ((1, lbas - 1, 2), (lbas - 1, 1, lbas - 1 - array_sectors)):
        header = [b"EFI PART", 0x10000, GPT_HEADER.size, 0, 0, mine, other, first_usable, last_usable,
                  DISK_GUID.bytes_le, array_lba, entries, entry_size, zlib.crc32(array)]
        at = mine * sector
        image[at:at + sector] = bytes(sector)
        GPT_HEADER.pack_into(image, at, *header)
        reseal(image, mine, sector)
    return image


def header_field(image: bytearray, lba: int, index: int, value: object, sector: int = SECTOR,
                 keep_crc: bool = False) -> None:
    """Set field ``index`` of the GPT header at ``lba`` (its CRC recomputed unless ``keep_crc``)."""
    fields = list(GPT_HEADER.unpack_from(image, lba * sector))
    fields[index] = value
    GPT_HEADER.pack_into(image, lba * sector, *fields)
    if not keep_crc:
        reseal(image, lba, sector)


def reseal(image: bytearray, lba: int, sector: int = SECTOR) -> None:
    """Recompute the CRC32 of the GPT header at ``lba``."""
    at = lba * sector
    size = struct.unpack_from("<I", image, at + 12)[0]
    struct.pack_into("<I", image, at + 16, 0)
    struct.pack_into("<I", image, at + 16, zlib.crc32(bytes(image[at:at + size])))


# field numbers of GPT_HEADER
SIGNATURE, HEADER_SIZE, HEADER_CRC, MY_LBA, ALTERNATE_LBA, DISK_GUID_FIELD, ENTRIES_LBA, NUM_ENTRIES, ENTRY_SIZE, \
    ENTRIES_CRC = 0, 2, 3, 5, 6, 9, 10, 11, 12, 13
