"""MBR and GPT partition tables (sddf.blk.partitions): what parses, what is refused and why."""
from __future__ import annotations

import zlib
from typing import Callable

import pytest

from blk_helpers.images import (ALTERNATE_LBA, DISK_GUID_FIELD, ENTRIES_CRC, ENTRY_SIZE, HEADER_SIZE, MY_LBA,
                                NUM_ENTRIES, SECTOR, gpt_image, header_field, mbr_image)
from sddf.blk.partitions import ByteRange, PartitionTable, TableError, TableReader, read_table

MIB = 1 << 20
DISK = 8 * MIB
LAST_LBA = DISK // SECTOR - 1


def table_of(image: bytearray, sector_size: int = SECTOR) -> PartitionTable:
    return read_table(lambda offset, length: bytes(image[offset:offset + length]), len(image), sector_size)


# ---- MBR --------------------------------------------------------------------------------------
def test_an_mbr_gives_its_used_primary_entries_by_position() -> None:
    image = mbr_image(DISK, [(0x0C, 2048, 2048), (0, 0, 0), (0x83, 8192, 4096)])
    table = table_of(image)
    assert table.scheme == "mbr"
    assert sorted(table.partitions) == [0, 2]  # entry 1 is empty (type 0); numbering keeps positions
    p0, p2 = table.partitions[0], table.partitions[2]
    assert (p0.start, p0.size, p0.type) == (MIB, MIB, "0x0c")
    assert (p2.start, p2.size, p2.type, p2.first_block, p2.blocks) == (4 * MIB, 2 * MIB, "0x83", 1024, 512)
    assert table.refusal(0) is None and table.refusal(2) is None


def test_mbr_lbas_count_in_the_devices_sectors() -> None:
    image = mbr_image(DISK, [(0x83, 256, 512)])
    p = table_of(image, sector_size=4096).partitions[0]
    assert (p.start, p.size) == (MIB, 2 * MIB)


@pytest.mark.parametrize("parts, message", [
    ([(0x83, 0, 100)], "starts at LBA 0, on the MBR itself"),
    ([(0x83, 2048, 0)], "has 0 sectors"),
    ([(0x83, 2048, 4096), (0x0C, 4096, 2048)], "partitions 0 (bytes [1048576, 3145728)) and 1 (bytes "
                                              "[2097152, 3145728)) overlap"),
])
def test_a_malformed_mbr_is_refused(parts: list, message: str) -> None:
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        table_of(mbr_image(DISK, parts))


def test_a_disk_without_a_table_is_refused() -> None:
    with pytest.raises(TableError, match="sector 0 ends in 0000, not the MBR signature 55aa"):
        table_of(bytearray(DISK))


# ---- GPT --------------------------------------------------------------------------------------
def test_a_gpt_gives_its_used_entries_by_position() -> None:
    image = gpt_image(DISK, [(2048, 4095), (4096, 8191)])
    table = table_of(image)
    assert table.scheme == "gpt" and sorted(table.partitions) == [0, 1]
    p0, p1 = table.partitions[0], table.partitions[1]
    assert (p0.start, p0.size, p0.name) == (MIB, MIB, "part0")
    assert (p1.start, p1.size, p1.name) == (2 * MIB, 2 * MIB, "part1")
    assert p0.type == "0fc63daf-8483-4772-8e79-3d69d8477de4"


def test_a_gpt_entry_with_a_zero_type_guid_is_unused_whatever_else_it_holds() -> None:
    image = gpt_image(DISK, [(2048, 4095), (4096, 8191)])
    for at in (2 * SECTOR + 128, (LAST_LBA - 32) * SECTOR + 128):  # entry 1, in both arrays
        image[at:at + 16] = bytes(16)
    header_field(image, 1, ENTRIES_CRC, zlib.crc32(image[2 * SECTOR:34 * SECTOR]))
    header_field(image, LAST_LBA, ENTRIES_CRC, zlib.crc32(image[2 * SECTOR:34 * SECTOR]))
    assert sorted(table_of(image).partitions) == [0]


def test_a_gpt_on_4k_sectors_parses() -> None:
    image = gpt_image(DISK, [(256, 511)], sector=4096)
    assert table_of(image, sector_size=4096).partitions[0].start == MIB


def test_a_gpt_with_a_larger_entry_size_parses() -> None:
    image = gpt_image(DISK, [(2048, 4095), (4096, 6143)], entries=64, entry_size=256)
    assert [(p.start, p.size) for p in table_of(image).partitions.values()] == [(MIB, MIB), (2 * MIB, MIB)]


def _flip(at: int) -> Callable[[bytearray], None]:
    def corrupt(image: bytearray) -> None:
        image[at] ^= 0x40
    return corrupt


def _field(lba: int, index: int, value: object, keep_crc: bool = False) -> Callable[[bytearray], None]:
    return lambda image: header_field(image, lba, index, value, keep_crc=keep_crc)


def _zero(start: int, length: int) -> Callable[[bytearray], None]:
    def corrupt(image: bytearray) -> None:
        image[start:start + length] = bytes(length)
    return corrupt


@pytest.mark.parametrize("corrupt, message", [
    (_flip(SECTOR + 40), r"the primary GPT header \(LBA 1\) fails its CRC32: it records 0x[0-9a-f]{8}, "
                         r"its bytes give 0x[0-9a-f]{8}"),
    (_field(1, ENTRIES_CRC, 0x12345678), r"the primary GPT entry array fails its CRC32: its header records "
                                         r"0x12345678, its bytes give 0x[0-9a-f]{8}"),
    (_flip(2 * SECTOR + 60), "the primary GPT entry array fails its CRC32"),
    (_zero(LAST_LBA * SECTOR, SECTOR), r"the backup GPT header \(LBA 16383\) has signature b'\\x00"),
    (_flip(LAST_LBA * SECTOR + 30), r"the backup GPT header \(LBA 16383\) fails its CRC32"),
    (_field(LAST_LBA, DISK_GUID_FIELD, bytes(16)), "the backup GPT header does not match the primary: disk_guid "
                                                   "is 00000000-0000-0000-0000-000000000000 in the backup, "
                                                   "5b1f9a2e-8c44-4d1a-9f0e-0123456789ab in the primary"),
    (_field(LAST_LBA, NUM_ENTRIES, 64), "the backup GPT header does not match the primary: num_entries is 64 "
                                        "in the backup, 128 in the primary"),
    (_field(LAST_LBA, ENTRIES_CRC, 7), "the backup GPT header does not match the primary: entries_crc is 7"),
    (_field(LAST_LBA, ALTERNATE_LBA, 2), r"the backup GPT header \(LBA 16383\) says it is at LBA 16383 with its "
                                         r"alternate at LBA 2; expected 16383 and 1"),
    (_field(LAST_LBA, MY_LBA, 1), r"the backup GPT header \(LBA 16383\) says it is at LBA 1"),
    (_flip((LAST_LBA - 32) * SECTOR + 40), "the backup GPT entry array fails its CRC32"),
    (_field(1, ALTERNATE_LBA, LAST_LBA - 8), r"alternate at LBA 16375; expected 1 and 16383 \(the disk's last "
                                             r"LBA is 16383\)"),
    (_field(1, ENTRY_SIZE, 100), "has entry_size 100, not 128 times a power of two"),
    (_field(1, ENTRY_SIZE, 384), "has entry_size 384, not 128 times a power of two"),
    (_field(1, HEADER_SIZE, 600), r"has header_size 600, outside \[92, 512\]"),
    (_field(1, NUM_ENTRIES, 0), "has no partition entries"),
    (_field(1, NUM_ENTRIES, 1 << 20), "puts its 1048576 entries of 128 bytes at LBA 2, outside LBAs 2..33"),
])
def test_a_corrupt_or_inconsistent_gpt_is_refused_saying_which_check_failed(corrupt, message: str) -> None:
    image = gpt_image(DISK, [(2048, 4095)])
    corrupt(image)
    with pytest.raises(TableError, match=message):
        table_of(image)


def test_a_gpt_on_a_disk_that_lost_its_end_is_refused() -> None:
    """The backup header must be at the disk's last LBA: an image whose tail is cut off (or a
    capacity rounded down to whole transfers) does not have it there."""
    image = gpt_image(DISK, [(2048, 4095)])[:DISK - 4096]
    with pytest.raises(TableError, match=r"alternate at LBA 16383; expected 1 and 16375"):
        table_of(image)


@pytest.mark.parametrize("parts, message", [
    ([(20, 4095)], r"GPT partition 0 spans LBAs 20..4095, outside the usable LBAs 34..16350"),
    ([(2048, 16351)], "outside the usable LBAs"),
    ([(4096, 2048)], "ends before it starts"),
    ([(2048, 4095), (4000, 5000)], "partitions 0 .* and 1 .* overlap"),
])
def test_gpt_entries_outside_the_usable_range_or_overlapping_are_refused(parts: list, message: str) -> None:
    with pytest.raises(TableError, match=message):
        table_of(gpt_image(DISK, parts))


# ---- which partitions a client may have --------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: mbr_image(DISK, [(0x83, 2049, 2048)]),
    lambda: gpt_image(DISK, [(2049, 4095)]),
], ids=["mbr", "gpt"])
def test_a_partition_not_starting_on_a_transfer_block_is_refused_for_clients(make) -> None:
    table = table_of(make())
    assert table.partitions[0].start == 2049 * SECTOR  # it is in the table…
    assert table.refusal(0) == ("partition 0 starts at byte 1049088, which is not a multiple of the 4096-byte "
                                "transfer size")


def test_a_size_that_is_not_whole_transfers_is_rounded_down_as_sddf_does() -> None:
    table = table_of(gpt_image(DISK, [(2048, 2048 + 8 * 3 + 5 - 1)]))  # 3 blocks and 5 sectors
    assert table.refusal(0) is None and table.partitions[0].blocks == 3


def test_partitions_that_do_not_exist_are_too_small_or_run_past_the_disk_are_refused() -> None:
    table = table_of(mbr_image(DISK, [(0x83, 2048, 4), (0, 0, 0), (0x83, DISK // SECTOR - 8, 16)]))
    assert table.refusal(1) == "partition 1 does not exist (the disk's MBR table has partitions [0, 2])"
    assert table.refusal(7) is not None and "does not exist" in table.refusal(7)  # type: ignore[operator]
    assert table.refusal(0) == "partition 0 is 2048 bytes, less than one 4096-byte transfer"
    assert table.refusal(2) == "partition 2 ends at byte 8392704, past the end of the 8388608-byte disk"


# ---- the reader's protocol ------------------------------------------------------------------------
def test_the_reader_asks_for_ranges_one_at_a_time_and_reuses_what_it_was_fed() -> None:
    image = gpt_image(DISK, [(2048, 4095)])
    reader = TableReader(DISK, SECTOR, max_read=64 * 1024)
    asked = []
    while (need := reader.need()) is not None:
        asked.append(need)
        first, count = need.blocks()
        reader.feed(first * 4096, bytes(image[first * 4096:(first + count) * 4096]))  # whole transfers, as a virt reads
    # MBR (its block holds the primary header too), primary entries, backup header, backup entries
    assert asked == [ByteRange(0, 512), ByteRange(1024, 16384), ByteRange(LAST_LBA * SECTOR, 512),
                     ByteRange((LAST_LBA - 32) * SECTOR, 16384)]
    assert reader.table is not None and reader.table.partitions[0].start == MIB


@pytest.mark.parametrize("offset, length, blocks", [
    (0, 512, (0, 1)), (4096, 4096, (1, 1)), (4095, 2, (0, 2)), (1024, 16384, (0, 5)), (8192, 16384, (2, 4)),
])
def test_a_range_is_read_as_the_transfer_blocks_covering_it(offset: int, length: int, blocks: tuple) -> None:
    assert ByteRange(offset, length).blocks() == blocks


def test_feeding_bytes_that_do_not_cover_the_need_is_an_error() -> None:
    reader = TableReader(DISK, SECTOR)
    with pytest.raises(ValueError, match=r"fed bytes \[0, 100\) do not cover the range needed"):
        reader.feed(0, bytes(100))


def test_a_range_larger_than_one_read_is_refused() -> None:
    image = gpt_image(DISK, [(2048, 4095)])
    with pytest.raises(TableError, match="the primary GPT entry array \\(16384 bytes at byte 1024\\) is larger "
                                         "than the 8192 bytes that can be read at once"):
        read_table(lambda offset, length: bytes(image[offset:offset + length]), DISK, SECTOR, max_read=8192)


@pytest.mark.parametrize("sector_size", [0, 256, 1000])
def test_a_sector_size_that_is_not_a_power_of_two_of_at_least_512_is_refused(sector_size: int) -> None:
    with pytest.raises(ValueError, match=f"sector size {sector_size}"):
        TableReader(DISK, sector_size)
