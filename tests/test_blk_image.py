"""``sddf blk``: disk images made by ``mkimage`` as independent tools read them, files in and out.

Tables are checked with util-linux's ``sfdisk --json``, GPT also with ``sgdisk -v`` (gdisk), and
with the parser the block virtualiser uses; FAT partitions with mtools (``minfo``, ``mdir``,
``mcopy``) and, where dosfstools is installed, ``fsck.fat``. ``.ci/run`` installs mtools, fdisk and
gdisk; a test whose tool is missing is skipped, saying which.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from pyfatfs.PyFat import PyFat

from helpers.sddf_cli import SDDF, sddf
from sddf.blk.image import (FAT12_MAX_SIZE, FAT32_MIN_SIZE, GPT_BASIC_DATA, GPT_LINUX_DATA, PartitionSpec,
                            fat_type_for, plan)
from sddf.blk.partitions import PartitionTable, read_table
from sddf.cli import main

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
# (size, what `,fat` makes of it): FAT12, FAT16 and FAT32 as mkfs.fat would choose them
MBR_PARTS = ["8M,fat", "16M,fat", "600M,fat", "rest"]
MBR_STARTS = [1 * MiB, 9 * MiB, 25 * MiB, 625 * MiB]
MBR_TYPES = ["1", "6", "c", "83"]
GPT_PARTS = ["8M,fat", "16M", "600M,fat", "rest,fat"]


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it with apt-get)")


def run(*cmd: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, capture_output=True, input=input, timeout=30)


def blk(capfdbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    """``sddf blk ARGS`` in this process: exit status, standard output, standard error."""
    try:
        code = main(["blk", *args])
    except SystemExit as exc:  # argparse's refusals
        code = exc.code  # type: ignore[assignment]
    out, err = capfdbinary.readouterr()
    return code, out, err.decode()


def ok(capfdbinary: pytest.CaptureFixture[bytes], *args: str) -> bytes:
    code, out, err = blk(capfdbinary, *args)
    assert code == 0, err
    return out


def sfdisk(image: Path) -> dict:
    need("sfdisk")
    done = run("sfdisk", "--json", str(image))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["partitiontable"]


def parsed(image: Path) -> PartitionTable:
    """The image's table as the block virtualiser's parser reads it."""
    with open(image, "rb") as f:
        return read_table(lambda at, n: os.pread(f.fileno(), n, at), image.stat().st_size)


def mtools_target(image: Path, offset: int, path: str = "") -> list[str]:
    return ["-i", f"{image}@@{offset}", f"::{path}"]


def fat_type_by_mtools(image: Path, offset: int) -> str:
    need("minfo")
    done = run("minfo", *mtools_target(image, offset))
    assert done.returncode == 0, done.stderr
    [kind] = [line.split('"')[1].strip() for line in done.stdout.decode().splitlines() if "disk type=" in line]
    return kind


def free_bytes(image: Path, offset: int) -> int:
    """The free space mtools counts in the FAT file system at ``offset``."""
    listing = run("mdir", *mtools_target(image, offset, "/")).stdout.decode()
    [line] = [line for line in listing.splitlines() if line.endswith("bytes free")]
    return int(line.removesuffix("bytes free").replace(" ", ""))


def fsinfo_is_honest(image: Path, offset: int) -> None:
    """A FAT32 FSInfo's free-cluster count is unknown (0xFFFFFFFF) or what mtools counts: Linux
    believes it."""
    with open(image, "rb") as f:
        boot = os.pread(f.fileno(), 512, offset)
        per_sector, per_cluster, fsinfo = struct.unpack_from("<HB", boot, 11) + struct.unpack_from("<H", boot, 48)
        [recorded] = struct.unpack("<I", os.pread(f.fileno(), 4, offset + fsinfo * per_sector + 488))
    assert recorded in (0xFFFFFFFF, free_bytes(image, offset) // (per_sector * per_cluster)), recorded


def fsck_clean(image: Path, start: int, size: int, tmp_path: Path) -> None:
    """``fsck.fat -n`` finds nothing to mend in the partition (copied out: it takes no offset)."""
    if shutil.which("fsck.fat") is None:
        return  # dosfstools is optional: mtools checks the file systems either way
    part = tmp_path / "part.img"
    with open(image, "rb") as src, open(part, "wb") as dst:
        dst.truncate(size)
        for at in range(0, size, MiB):  # copy only what is not a hole: the images are sparse
            chunk = os.pread(src.fileno(), min(MiB, size - at), start + at)
            if chunk.count(0) != len(chunk):
                os.pwrite(dst.fileno(), chunk, at)
    done = run("fsck.fat", "-n", str(part))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.fixture
def mbr_image(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> Path:
    image = tmp_path / "disk.img"
    ok(capfdbinary, "mkimage", str(image), "--size", "1G", *[f"--partition={p}" for p in MBR_PARTS])
    return image


@pytest.fixture
def gpt_image(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> Path:
    image = tmp_path / "gpt.img"
    ok(capfdbinary, "mkimage", str(image), "--size", "1G", "--table", "gpt", *[f"--partition={p}" for p in GPT_PARTS])
    return image


# ---- tables ---------------------------------------------------------------------------------
def test_an_mbr_image_is_what_sfdisk_and_the_virtualisers_parser_read(mbr_image: Path) -> None:
    assert mbr_image.stat().st_size == 1 << 30
    assert mbr_image.stat().st_blocks * 512 < 8 * MiB, "the image is sparse"
    table = sfdisk(mbr_image)
    assert table["label"] == "dos" and table["sectorsize"] == 512
    parts = table["partitions"]
    assert [p["start"] * 512 for p in parts] == MBR_STARTS
    assert [p["size"] * 512 for p in parts] == [8 * MiB, 16 * MiB, 600 * MiB, 399 * MiB]
    assert [p["type"] for p in parts] == MBR_TYPES
    ours = parsed(mbr_image)
    assert ours.scheme == "mbr"
    assert [(p.start, p.size) for p in ours.partitions.values()] == [(p["start"] * 512, p["size"] * 512) for p in parts]


def test_a_gpt_image_passes_sgdisk_and_is_what_sfdisk_and_the_parser_read(gpt_image: Path) -> None:
    need("sgdisk")
    verify = run("sgdisk", "-v", str(gpt_image))
    assert verify.returncode == 0 and b"No problems found" in verify.stdout, verify.stdout + verify.stderr
    assert b"Caution" not in verify.stdout, verify.stdout  # every partition starts and ends on 1 MiB
    table = sfdisk(gpt_image)
    assert table["label"] == "gpt" and table["firstlba"] == 34 and table["lastlba"] == (1 << 30) // 512 - 34
    parts = table["partitions"]
    assert [p["start"] * 512 for p in parts] == [1 * MiB, 9 * MiB, 25 * MiB, 625 * MiB]
    assert [p["size"] * 512 for p in parts] == [8 * MiB, 16 * MiB, 600 * MiB, 398 * MiB]
    fat, linux = str(GPT_BASIC_DATA).upper(), str(GPT_LINUX_DATA).upper()
    assert [p["type"] for p in parts] == [fat, linux, fat, fat]
    guids = [p["uuid"] for p in parts] + [table["id"]]
    assert len(set(guids)) == len(guids), "the disk and every partition have their own GUID"
    ours = parsed(gpt_image)  # checks both headers and both arrays' CRCs
    assert ours.scheme == "gpt"
    assert [(p.start, p.size) for p in ours.partitions.values()] == [(p["start"] * 512, p["size"] * 512) for p in parts]


def test_two_gpt_images_get_different_guids(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    ids = []
    for name in ("a.img", "b.img"):
        ok(capfdbinary, "mkimage", str(tmp_path / name), "--size", "8M", "--table", "gpt", "--partition", "1M")
        table = sfdisk(tmp_path / name)
        ids += [table["id"], table["partitions"][0]["uuid"]]
    assert len(set(ids)) == 4


def test_info_shows_the_table_and_fat_types(mbr_image: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    lines = ok(capfdbinary, "info", str(mbr_image)).decode().splitlines()
    assert lines[0] == f"{mbr_image}: 1 GiB, MBR, 4 partition(s)"
    rows = [line.split() for line in lines[2:]]
    assert [row[:6] for row in rows] == [
        ["0", "1", "MiB", "8", "MiB", "FAT12"], ["1", "9", "MiB", "16", "MiB", "FAT16"],
        ["2", "25", "MiB", "600", "MiB", "FAT32"], ["3", "625", "MiB", "399", "MiB", "-"]]
    assert [row[6] for row in rows] == ["0x01", "0x06", "0x0c", "0x83"]


# ---- FAT ------------------------------------------------------------------------------------
def test_fat_types_are_chosen_by_size_as_mkfs_fat_chooses_them() -> None:
    # measured with dosfstools 4.2's mkfs.fat on images of these sizes
    assert [fat_type_for(s) for s in (64 << 10, 8 * MiB, 8204 << 10)] == ["FAT12"] * 3
    assert [fat_type_for(s) for s in (8208 << 10, 12 * MiB, 511 * MiB)] == ["FAT16"] * 3
    assert [fat_type_for(s) for s in (512 * MiB, 1 << 30)] == ["FAT32"] * 2
    assert FAT12_MAX_SIZE < FAT32_MIN_SIZE


def test_mtools_sees_the_fat_types_and_empty_file_systems(mbr_image: Path, tmp_path: Path) -> None:
    need("mdir")
    for start, size, kind in zip(MBR_STARTS, (8 * MiB, 16 * MiB, 600 * MiB), ("FAT12", "FAT16", "FAT32")):
        assert fat_type_by_mtools(mbr_image, start) == kind
        listing = run("mdir", *mtools_target(mbr_image, start, "/"))
        assert listing.returncode == 0 and b"No files" in listing.stdout, listing.stdout + listing.stderr
        fsck_clean(mbr_image, start, size, tmp_path)


@pytest.mark.parametrize("number", [0, 1, 2], ids=["FAT12", "FAT16", "FAT32"])
def test_files_put_here_are_read_by_mtools_and_theirs_by_us(mbr_image: Path, tmp_path: Path, number: int,
                                                            capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    need("mcopy")
    start, spec = MBR_STARTS[number], f"{mbr_image}:{number}"
    ours, theirs = tmp_path / "ours.bin", tmp_path / "theirs.txt"
    ours.write_bytes(os.urandom(100_000))
    theirs.write_bytes(b"written by mtools\n" * 1000)
    ok(capfdbinary, "put", spec, str(ours), "/Ours.bin")
    assert run("mmd", *mtools_target(mbr_image, start, "/sub")).returncode == 0
    assert run("mcopy", "-i", f"{mbr_image}@@{start}", str(theirs), "::/sub/theirs.txt").returncode == 0
    ok(capfdbinary, "put", spec, str(ours), "/sub/")  # into a directory: keeps its name

    assert run("mtype", *mtools_target(mbr_image, start, "/Ours.bin")).stdout == ours.read_bytes()
    assert run("mtype", *mtools_target(mbr_image, start, "/sub/ours.bin")).stdout == ours.read_bytes()
    assert ok(capfdbinary, "cat", spec, "/sub/theirs.txt") == theirs.read_bytes()
    assert ok(capfdbinary, "ls", spec).decode().split() == ["<DIR>", "sub/", "100000", "Ours.bin"]
    assert ok(capfdbinary, "ls", spec, "/sub").decode().split() == ["100000", "ours.bin", "18000", "theirs.txt"]
    assert ok(capfdbinary, "ls", spec, "/sub/theirs.txt").decode().split() == ["18000", "/sub/theirs.txt"]
    if number == 2:
        fsinfo_is_honest(mbr_image, start)
    others = [s for i, s in enumerate(MBR_STARTS[:3]) if i != number]
    assert all(b"No files" in run("mdir", *mtools_target(mbr_image, s, "/")).stdout for s in others)
    fsck_clean(mbr_image, start, (8 * MiB, 16 * MiB, 600 * MiB)[number], tmp_path)


def test_partition_zero_is_the_default_and_gpt_partitions_count_as_entries(
        gpt_image: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    need("mcopy")
    host = tmp_path / "hello.txt"
    host.write_bytes(b"hello\n")
    ok(capfdbinary, "put", str(gpt_image), str(host), "/")
    ok(capfdbinary, "put", f"{gpt_image}:3", str(host), "/three.txt")
    assert run("mtype", *mtools_target(gpt_image, 1 * MiB, "/hello.txt")).stdout == b"hello\n"
    assert run("mtype", *mtools_target(gpt_image, 625 * MiB, "/three.txt")).stdout == b"hello\n"
    assert fat_type_by_mtools(gpt_image, 625 * MiB) == "FAT16"


def test_a_put_that_does_not_fit_leaves_no_half_file_and_the_next_partition_alone(
        mbr_image: Path, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    def next_partition() -> str:
        with open(mbr_image, "rb") as f:
            return hashlib.sha256(os.pread(f.fileno(), 16 * MiB, MBR_STARTS[1])).hexdigest()

    need("mdir")
    before, free = next_partition(), free_bytes(mbr_image, MBR_STARTS[0])
    big = tmp_path / "big.bin"
    big.write_bytes(b"\xa5" * (9 * MiB))  # the FAT12 partition holds 8 MiB
    code, _, err = blk(capfdbinary, "put", str(mbr_image), str(big), "/big.bin")
    assert code == 2 and "Not enough free space" in err, err
    assert ok(capfdbinary, "ls", str(mbr_image)) == b""
    assert free_bytes(mbr_image, MBR_STARTS[0]) == free, "the clusters it took are free again"
    assert next_partition() == before
    fsck_clean(mbr_image, MBR_STARTS[0], 8 * MiB, tmp_path)


# ---- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--size", "64Q", "--partition", "1M"], "not a size: '64Q'"),
    (["--size", "64M", "--partition", "1000"], "'1000' is not a positive multiple of 4 KiB"),
    (["--size", "16M", "--partition", "8M", "--partition", "8M"], "partition 1 (8 MiB) does not fit"),
    (["--size", "16M", "--table", "gpt", "--partition", "15M"], "partition 0 (15 MiB) does not fit"),
    (["--size", "1M", "--partition", "rest"], "partition 0 (rest) does not fit"),
    (["--size", "64M"] + ["--partition=1M"] * 5, "an MBR table holds at most 4"),
    (["--size", "64M", "--partition", "rest", "--partition", "1M"], "only the last partition may be 'rest'"),
    (["--size", "64M", "--partition", "8M,ext4"], "unknown file system 'ext4'"),
    (["--size", "64M", "--partition", "32K,fat"], "a FAT partition must be 64 KiB to 32 GiB, not 32 KiB"),
    (["--size", "3T", "--partition", "2T", "--partition", "1G"], "beyond what MBR can address: use --table gpt"),
    (["--size", "64M"], "the following arguments are required: --partition"),
])
def test_bad_mkimage_arguments_are_refused_by_name(args: list[str], message: str, tmp_path: Path,
                                                   capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    code, _, err = blk(capfdbinary, "mkimage", str(tmp_path / "x.img"), *args)
    assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == [], "nothing left behind"


def test_an_existing_image_is_replaced_only_with_force(mbr_image: Path, capfdbinary: pytest.CaptureFixture[bytes]
                                                       ) -> None:
    def sector0() -> bytes:
        with open(mbr_image, "rb") as f:
            return f.read(512)

    before = sector0()
    code, _, err = blk(capfdbinary, "mkimage", str(mbr_image), "--size", "8M", "--partition", "1M")
    assert code == 2 and f"{mbr_image} exists: give --force" in err
    assert sector0() == before and mbr_image.stat().st_size == 1 << 30
    ok(capfdbinary, "mkimage", str(mbr_image), "--size", "8M", "--partition", "1M", "--force")
    assert mbr_image.stat().st_size == 8 * MiB
    assert sorted(p.name for p in mbr_image.parent.iterdir()) == [mbr_image.name], "no temporary file left"


def test_a_host_that_cannot_take_the_image_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PyFat, "mkfs", full)
    code, _, err = blk(capfdbinary, "mkimage", str(tmp_path / "x.img"), "--size", "8M", "--partition", "1M,fat")
    assert code == 2 and "cannot write" in err and "No space left on device" in err, err
    assert list(tmp_path.iterdir()) == []


def test_mkimage_refuses_to_replace_what_is_not_a_regular_file(tmp_path: Path,
                                                               capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    code, _, err = blk(capfdbinary, "mkimage", str(tmp_path), "--size", "8M", "--partition", "1M", "--force")
    assert code == 2 and "is not a regular file" in err


def test_looking_into_what_is_not_there_is_refused_by_name(mbr_image: Path, tmp_path: Path,
                                                           capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(64 * 1024))
    cases = [
        (["ls", f"{mbr_image}:7"], f"{mbr_image} has no partition 7 (its MBR table has partitions 0, 1, 2, 3)"),
        (["ls", f"{mbr_image}:3"], "partition 3 of", "holds no FAT file system"),
        (["cat", str(mbr_image), "/nothing.txt"], "no such file or directory: /nothing.txt"),
        (["ls", str(mbr_image), "/nodir"], "no such file or directory: /nodir"),
        (["put", str(mbr_image), str(junk), "/nodir/x"], "no such file or directory: /nodir"),
        (["put", str(mbr_image), str(tmp_path / "absent"), "/x"], "cannot read", "absent"),
        (["ls", str(junk)], "no partition table"),
        (["ls", str(tmp_path / "absent.img")], "cannot open image", "absent.img"),
        (["info", str(tmp_path / "absent.img")], "cannot open image"),
    ]
    for args, *messages in cases:
        code, out, err = blk(capfdbinary, *args)
        assert code == 2 and out == b"" and all(m in err for m in messages), (args, err)


def test_a_fat_file_system_claiming_more_than_its_partition_is_refused(
        mbr_image: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    with open(mbr_image, "r+b") as f:  # FAT12's 16-bit total-sectors field: say 12 MiB in the 8 MiB partition
        os.pwrite(f.fileno(), struct.pack("<H", 12 * MiB // 512), MBR_STARTS[0] + 19)
    code, _, err = blk(capfdbinary, "ls", str(mbr_image))
    assert code == 2 and f"claims {12 * MiB} bytes, more than the partition's {8 * MiB}" in err, err


def test_the_plan_is_aligned_and_the_rest_is_what_is_left() -> None:
    parts = plan(64 * MiB, "mbr", [PartitionSpec.parse("3M"), PartitionSpec.parse("4100K,fat"),
                                   PartitionSpec.parse("rest,fat")])
    assert [(p.start, p.size, p.fat) for p in parts] == [
        (1 * MiB, 3 * MiB, None), (4 * MiB, 4100 << 10, "FAT12"), (9 * MiB, 55 * MiB, "FAT16")]


def test_the_sddf_command_runs_blk_and_puts_standard_input(mbr_image: Path) -> None:
    put = subprocess.run([SDDF, "blk", "put", f"{mbr_image}:1", "-", "/stdin.txt"], input=b"piped\n",
                         capture_output=True, timeout=30)
    assert put.returncode == 0, put.stderr
    done = sddf("blk", "cat", f"{mbr_image}:1", "/stdin.txt")
    assert done.returncode == 0 and done.stdout == "piped\n", done.stderr
    done = sddf("blk", "put", f"{mbr_image}:1", "-", "/")
    assert done.returncode == 2 and "/ is a directory: name the file to make from standard input" in done.stderr
    done = sddf("blk", "ls", f"{mbr_image}:9")
    assert done.returncode == 2 and "has no partition 9" in done.stderr
