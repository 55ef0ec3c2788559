"""``sddf blk``: make disk images for the block system and look inside them on the host.

``mkimage`` writes a sparse image with an MBR or GPT table and FAT-formatted partitions
(:mod:`sddf.blk.image`); ``info`` prints its table; ``ls``, ``cat`` and ``put`` list, print and copy
in files of the FAT file system in one partition (pyfatfs at the partition's offset). Partitions
are numbered as the block virtualiser numbers them: the table is read by the same parser
(:mod:`sddf.blk.partitions`), and ``IMAGE:N`` names partition N (default 0).
"""
from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import sys
from contextlib import contextmanager, nullcontext
from typing import BinaryIO, ContextManager, Iterator

from fs.errors import FSError, ResourceNotFound
from pyfatfs._exceptions import PyFATException
from pyfatfs.FATDirectoryEntry import FATDirectoryEntry
from pyfatfs.PyFatFS import PyFatFS

from sddf.blk.image import (GPT_BASIC_DATA, GPT_LINUX_DATA, MBR_TYPES, SECTOR, Bpb, ImageError, PartitionSpec,
                            build, data_clusters, fat_type_of, fsinfo_free_count_unknown, human, parse_size)
from sddf.blk.partitions import Partition, PartitionTable, TableError, read_table

NT_LOWER_BASE, NT_LOWER_EXT = 0x08, 0x10  # a directory entry's NT flags: its 8.3 name's parts are lower case
TYPE_NAMES = {**{f"{code:#04x}": f"{fat or 'Linux'}" for fat, code in MBR_TYPES.items()},
              str(GPT_BASIC_DATA): "basic data", str(GPT_LINUX_DATA): "Linux data"}


def split_spec(spec: str) -> tuple[str, int]:
    """``IMAGE[:PART]`` as (image path, partition number); PART defaults to 0."""
    path, colon, number = spec.rpartition(":")
    return (path, int(number)) if colon and number.isdigit() else (spec, 0)


def read_partitions(path: str) -> PartitionTable:
    """The partition table of the image (or block device) at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ImageError(f"cannot open image {path}: {exc.strerror}") from None
    try:
        return read_table(lambda offset, length: os.pread(fd, length, offset), os.lseek(fd, 0, os.SEEK_END))
    except TableError as exc:
        raise ImageError(f"{path}: {exc}") from None
    finally:
        os.close(fd)


def read_boot(path: str, part: Partition) -> bytes:
    with open(path, "rb") as image:
        return os.pread(image.fileno(), SECTOR, part.start)


def fat_partition(spec: str) -> tuple[str, Partition, int]:
    """The image path, the FAT partition ``IMAGE[:PART]`` names and its count of data clusters,
    or a clear refusal."""
    path, number = split_spec(spec)
    table = read_partitions(path)
    part = table.partitions.get(number)
    if part is None:
        raise ImageError(f"{path} has no partition {number} (its {table.scheme.upper()} table has "
                         f"partitions {', '.join(map(str, sorted(table.partitions))) or 'none'})")
    boot = read_boot(path, part)
    clusters = data_clusters(boot)
    if clusters is None:
        raise ImageError(f"partition {number} of {path} (type {type_name(part.type)}) holds no FAT file system")
    bpb = Bpb.read(boot)
    if bpb.total * bpb.per_sector > part.size:
        raise ImageError(f"the FAT file system in partition {number} of {path} claims "
                         f"{bpb.total * bpb.per_sector} bytes, more than the partition's {part.size}")
    return path, part, clusters


@contextmanager
def fat_fs(spec: str, write: bool = False) -> Iterator[PyFatFS]:
    """The FAT file system of partition ``IMAGE[:PART]``; its errors as :class:`ImageError`."""
    path, part, clusters = fat_partition(spec)
    try:
        with PyFatFS(path, offset=part.start, read_only=not write) as fs:
            # pyfatfs allocates any free FAT entry, even the spare ones past the volume's last
            # cluster: data written there would land beyond the file system, in the next partition
            del fs.fs.fat[clusters + 2:]
            try:
                yield fs
            finally:
                if write:  # pyfatfs keeps what remove() frees in memory only (FAT16/32 flush it on close)
                    fs.fs.flush_fat()
        if write:
            with open(path, "r+b") as image:
                for offset, data in fsinfo_free_count_unknown(read_boot(path, part)):
                    os.pwrite(image.fileno(), data, part.start + offset)
    except ResourceNotFound as exc:
        raise ImageError(f"{spec}: no such file or directory: {exc.path}") from None
    except (FSError, PyFATException) as exc:
        raise ImageError(f"{spec}: {exc}") from None


def on_disk(fs: PyFatFS, path: str) -> str:
    """``path`` as the file system spells it: FAT names match whatever their case, but pyfatfs
    compares them exactly (and shows a name mtools or Linux stored as lower-case 8.3 in capitals)."""
    spelled = "/"
    for segment in filter(None, path.split("/")):
        names = fs.listdir(spelled)
        folded = [name for name in names if name.lower() == segment.lower()]
        spelled = posixpath.join(spelled, segment if segment in names or not folded else folded[0])
    return spelled


def type_name(kind: str) -> str:
    """An MBR type byte or GPT type GUID, with its name when we know it."""
    return f"{kind} ({TYPE_NAMES[kind]})" if kind in TYPE_NAMES else kind


# ---- commands ----------------------------------------------------------------------------------
def cmd_mkimage(args: argparse.Namespace) -> int:
    specs = [PartitionSpec.parse(text) for text in args.partition]
    build(args.image, parse_size(args.size), args.table, specs, force=args.force)
    return show_table(args.image)


def cmd_info(args: argparse.Namespace) -> int:
    return show_table(args.image)


def show_table(path: str) -> int:
    table = read_partitions(path)
    print(f"{path}: {human(table.disk_size)}, {table.scheme.upper()}, {len(table.partitions)} partition(s)")
    print(f"{'#':>3}  {'start':>12}  {'size':>12}  {'file system':11}  type")
    for number, part in sorted(table.partitions.items()):
        fat = fat_type_of(read_boot(path, part)) or "-"
        print(f"{number:>3}  {human(part.start):>12}  {human(part.size):>12}  {fat:11}  {type_name(part.type)}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    with fat_fs(args.image) as fs:
        path = on_disk(fs, args.path)
        if not fs.exists(path):
            raise ResourceNotFound(path)
        entry = fs.fs.root_dir.get_entry(path)
        if entry.is_directory():
            dirs, files, _specials = entry.get_entries()
            listing = [(shown(e), e) for e in dirs + files]
        else:
            listing = [(args.path, entry)]
        for name, e in sorted(listing, key=lambda item: (not item[1].is_directory(), item[0].lower())):
            print(f"{'<DIR>' if e.is_directory() else e.filesize:>12}  {name}{'/' if e.is_directory() else ''}")
    return 0


def shown(entry: FATDirectoryEntry) -> str:
    """An entry's name as Linux and mtools show it: its long name, else its 8.3 name in the case
    that Windows NT's flags record (pyfatfs ignores them and shows capitals)."""
    name = repr(entry)
    if entry.lfn_entry is None:
        base, dot, ext = name.partition(".")
        name = (base.lower() if entry.ntres & NT_LOWER_BASE else base) + dot + \
            (ext.lower() if entry.ntres & NT_LOWER_EXT else ext)
    return name


def cmd_cat(args: argparse.Namespace) -> int:
    with fat_fs(args.image) as fs, fs.openbin(on_disk(fs, args.path)) as file:
        shutil.copyfileobj(file, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def host_file(name: str) -> ContextManager[BinaryIO]:
    """The host file ``name`` opened to read, or standard input for ``-``."""
    if name == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(name, "rb")
    except OSError as exc:
        raise ImageError(f"cannot read {name}: {exc.strerror}") from None


def cmd_put(args: argparse.Namespace) -> int:
    with host_file(args.hostfile) as host, fat_fs(args.image, write=True) as fs:
        target = on_disk(fs, args.path)
        if args.path.endswith("/") or fs.isdir(target):
            if args.hostfile == "-":
                raise ImageError(f"{args.path} is a directory: name the file to make from standard input")
            target = on_disk(fs, posixpath.join(target, os.path.basename(args.hostfile)))
        try:
            fs.upload(target, host)
        except (FSError, PyFATException):
            if fs.exists(target):  # not half a file: e.g. the disk filled up
                fs.remove(target)
            raise
    print(f"{args.hostfile} -> {args.image}:{target}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sddf blk", description=(
        "Make disk images for the block system and look inside them: IMAGE:N names partition N "
        "(numbered as the block virtualiser numbers them; default 0)."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=func)
        return sp

    mk = add("mkimage", cmd_mkimage, "create a sparse disk image with an MBR or GPT partition table "
             "(partitions 1 MiB aligned, in order), FAT-formatting the partitions marked fat")
    mk.add_argument("image", metavar="IMAGE")
    mk.add_argument("--size", required=True, metavar="SIZE", help="image size: bytes or 64M, 1G, … (powers of 1024)")
    mk.add_argument("--table", choices=("mbr", "gpt"), default="mbr", help="partition table (default %(default)s)")
    mk.add_argument("--partition", action="append", required=True, metavar="SIZE[,fat]",
                    help="a partition, in order (repeat for more): SIZE or 'rest' (what is left); ',fat' "
                         "formats it FAT12/16/32, chosen by size as mkfs.fat would")
    mk.add_argument("--force", action="store_true", help="replace IMAGE if it exists")
    info = add("info", cmd_info, "print an image's partition table: each partition's start, size, "
               "type and FAT type")
    info.add_argument("image", metavar="IMAGE")
    ls = add("ls", cmd_ls, "list a directory (default /) of the FAT file system in a partition, with sizes")
    ls.add_argument("image", metavar="IMAGE[:PART]")
    ls.add_argument("path", metavar="PATH", nargs="?", default="/")
    cat = add("cat", cmd_cat, "print a file of the FAT file system in a partition to standard output")
    cat.add_argument("image", metavar="IMAGE[:PART]")
    cat.add_argument("path", metavar="PATH")
    put = add("put", cmd_put, "copy a host file into the FAT file system in a partition (into PATH "
              "if that is a directory)")
    put.add_argument("image", metavar="IMAGE[:PART]")
    put.add_argument("hostfile", metavar="HOSTFILE", help="a host file, or - for standard input")
    put.add_argument("path", metavar="PATH")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ImageError as exc:
        print(f"sddf blk: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
