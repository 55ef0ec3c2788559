"""A FAT volume served through FatFs (ChaN's library, which LionsOS's server uses; our cffi build
``sddf.fs._fatfs``).

:class:`Volume` keeps the client's open files and directories and turns each fs operation into
FatFs calls, answering with an :class:`FsStatus`. FatFs reads and writes sectors through
:class:`~sddf.apps.fs.fatdisk.FatDisk`, which serves them from the server's :class:`BlockCache`
(so a disk callback may wait for block responses: the caller runs it on a cothread).

- A block failure inside a FatFs call makes the disk answer RES_ERROR for the rest of the call;
  :class:`Volume` turns it into ERROR after the call and recovers: it forgets the cache and mounts
  the volume again, which makes FatFs drop what it held in memory (the open handles then answer
  INVALID_FD);
- FatFs is built without re-entrancy or file locking (FF_FS_REENTRANT 0, FF_FS_LOCK 0): one
  cothread makes every FatFs call, and :class:`Volume` refuses what FatFs would corrupt the
  volume over — a file open for writing opened again, an open file (or a directory holding
  one) removed or renamed — with SERVER_WAS_DENIED;
- a file open read-only cannot change while it is open (no writer may open it): its link map
  (:mod:`.linkmap`) is made at open, FatFs seeks by it, and reads of at least
  :data:`DIRECT_READ` bytes go straight from the block device into the client's buffer
  (:meth:`BlockCache.read_uncached`, which first writes what the cache holds newer than the
  disk). FatFs serves every other read, with one copy per sector from the cache into the
  client's buffer. A file open for writing is read through FatFs only (its sector buffer may
  hold data not yet written, and its clusters may grow);
- FatFs leaves the bytes of clusters it allocates as they were: a write past the end of a file,
  or a truncate that lengthens it, first writes zeros over the gap (as POSIX has it), so no
  stale data of a removed file shows through;
- paths and names are CP437 in this build (FF_LFN_UNICODE 0): a client's path must be UTF-8 that
  CP437 can spell (INVALID_NAME otherwise); STAT's times are 0.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sddf.apps.fs.blockcache import SECTOR, BlockCache, BlockIoError
from sddf.apps.fs.fatdisk import DISKS, FatDisk
from sddf.apps.fs.linkmap import LinkMap, LinkMapError
from sddf.fs._fatfs import ffi, lib
from sddf.fs.protocol import ACCESS_MODE_MASK, KNOWN_OPEN_FLAGS, MAX_NAME, FsOpenFlags, FsStat, FsStatus

STATUS_OF = {
    lib.FR_OK: FsStatus.SUCCESS, lib.FR_NO_FILE: FsStatus.NO_FILE, lib.FR_NO_PATH: FsStatus.INVALID_PATH,
    lib.FR_INVALID_NAME: FsStatus.INVALID_NAME, lib.FR_DENIED: FsStatus.SERVER_WAS_DENIED,
    lib.FR_EXIST: FsStatus.ALREADY_EXISTS, lib.FR_INVALID_OBJECT: FsStatus.INVALID_FD,
    lib.FR_WRITE_PROTECTED: FsStatus.SERVER_WAS_DENIED, lib.FR_NOT_ENOUGH_CORE: FsStatus.ALLOCATION_ERROR,
    lib.FR_TOO_MANY_OPEN_FILES: FsStatus.TOO_MANY_OPEN_FILES,
}
DRIVE_NUMBER, DRIVE = 0, b"0:"  # FatFs's drive, and how paths name it
#: drive 0's file system object. FatFs keeps a pointer to the one mounted and writes to it when the
#: drive is mounted again, so it must outlive every Volume (a freed one corrupts the heap)
FATFS = ffi.new("FATFS *")
MAX_FILE_SIZE = 0xFFFF_FFFF  # FAT's limit (FatFs's FSIZE_t without exFAT is 32 bits)
#: reads of a file open read-only from this size on go to the block device past FatFs and the cache
DIRECT_READ = 64 << 10
CHUNK = 1 << 20  # bytes of zeros per FatFs write when filling a gap
ZEROS = bytes(CHUNK)
MODE_DIR, MODE_FILE = 0o040755, 0o100644
CODE_PAGE = codecs.lookup("cp437").name  # looked up now: once confined, a PD cannot import the codec


class DiskFailed(Exception):
    """A FatFs call met a block I/O failure; the operation answers ERROR and the volume recovers."""


@dataclass
class OpenFile:
    handle: Any  # FatFs's FIL
    key: str
    path: bytes
    readable: bool
    writable: bool
    size: int
    links: LinkMap | None = None  # a file open read-only: where its bytes lie (FatFs seeks by it too)


@dataclass
class OpenDir:
    handle: Any  # FatFs's DIR
    key: str
    path: bytes
    location: int = 0
    unread: bytes | None = None  # a name read but not handed out (the client's buffer was too small)


@dataclass
class Table:
    """Descriptors: the lowest free number is given out."""

    limit: int
    open: dict[int, Any] = field(default_factory=dict)

    def add(self, item: Any) -> int | None:
        fd = next((i for i in range(self.limit) if i not in self.open), None)
        if fd is not None:
            self.open[fd] = item
        return fd


class Volume:
    """The client's view of the FAT volume: every method answers (status, result)."""

    def __init__(self, cache: BlockCache, log: Callable[[str], None], max_open: int) -> None:
        self._cache = cache
        self._log = log
        self._disk = FatDisk(cache, log)
        self.files = Table(max_open)
        self.dirs = Table(max_open)
        self.mounted = False

    # ---- the volume ---------------------------------------------------------------------
    def mount(self) -> FsStatus:
        DISKS[DRIVE_NUMBER] = self._disk
        self._disk.reset()
        try:
            result = self._call(lib.f_mount, FATFS, DRIVE, 1)
        except DiskFailed:
            self._log("mounting the FAT volume failed: the block device failed a read")
            self._cache.drop()
            self._disk.reset()
            self.mounted = False
            return FsStatus.ERROR
        if result == lib.FR_NO_FILESYSTEM:
            self._log("the partition holds no FAT file system FatFs can mount (FAT12/16/32 with 512-byte "
                      "sectors); not formatting it: make one with `sddf blk mkimage` or mkfs.fat")
        elif result != lib.FR_OK:
            self._log(f"mounting the FAT volume failed: FatFs result {result}")
        self.mounted = result == lib.FR_OK
        return STATUS_OF.get(result, FsStatus.ERROR)

    def unmount(self) -> FsStatus:
        """Close everything open (writing back what FatFs holds), then send and FLUSH the cache."""
        closed = [self.close(fd) for fd in list(self.files.open)] + [self.closedir(fd) for fd in list(self.dirs.open)]
        try:
            self._cache.sync()
        except BlockIoError as exc:
            self._log(f"unmount: {exc}")
            closed.append(FsStatus.ERROR)
        self.mounted = False
        return FsStatus.SUCCESS if all(s == FsStatus.SUCCESS for s in closed) else FsStatus.ERROR

    def recover(self) -> None:
        """After a block failure: forget the cache and mount again (FatFs drops its state)."""
        self._cache.drop()
        self._disk.reset()
        if self.mounted and self.mount() != FsStatus.SUCCESS:
            self._log("the volume could not be mounted again after a block failure; INITIALISE to retry")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A FatFs call; DiskFailed if it met a block failure (a bug in a callback is raised)."""
        result = fn(*args)
        if self._disk.bug is not None:
            bug, self._disk.bug = self._disk.bug, None
            raise bug
        if self._disk.failed:
            raise DiskFailed()
        return result

    # ---- files --------------------------------------------------------------------------
    def open(self, path: bytes, flags: int) -> tuple[FsStatus, int]:
        mode = flags & ACCESS_MODE_MASK
        if flags & ~KNOWN_OPEN_FLAGS or mode == ACCESS_MODE_MASK:
            return FsStatus.ERROR, 0
        key = _key(path)
        readable, writable = mode != FsOpenFlags.WRITE_ONLY, mode != FsOpenFlags.READ_ONLY
        holders = [f for f in self.files.open.values() if f.key == key]
        if any(f.writable for f in holders) or (writable and holders):
            return FsStatus.SERVER_WAS_DENIED, 0
        if len(self.files.open) >= self.files.limit:
            return FsStatus.TOO_MANY_OPEN_FILES, 0
        fat_mode = (lib.FA_READ if readable else 0) | (lib.FA_WRITE if writable else 0)
        fat_mode |= lib.FA_OPEN_ALWAYS if flags & FsOpenFlags.CREATE else lib.FA_OPEN_EXISTING
        handle = ffi.new("FIL *")
        result = self._call(lib.f_open, handle, path, fat_mode)
        if result != lib.FR_OK:
            return self._status(result), 0
        f = OpenFile(handle, key, path, readable, writable, handle.obj.objsize)
        if not writable:  # its clusters cannot change while it is open (no writer may open it)
            try:
                f.links = self._call(LinkMap, handle, f.size, SECTOR)
            except LinkMapError as exc:
                self._call(lib.f_close, handle)
                self._log(f"open {path.decode(CODE_PAGE)}: its cluster chain is unusable: {exc}")
                return FsStatus.ERROR, 0
        fd = self.files.add(f)
        assert fd is not None  # room was checked above
        return FsStatus.SUCCESS, fd

    def close(self, fd: int) -> FsStatus:
        """Close (writing back what FatFs holds); a handle a recovery invalidated just goes."""
        result = self._call(lib.f_close, self.files.open.pop(fd).handle)
        return FsStatus.SUCCESS if result == lib.FR_INVALID_OBJECT else self._status(result)

    def read(self, fd: int, offset: int, into: memoryview) -> tuple[FsStatus, int]:
        """Read from ``offset`` into ``into``; the bytes read (fewer at the end of the file). A
        large read of a file open read-only goes past FatFs (:meth:`_read_direct`)."""
        f = self.files.open[fd]
        if not f.readable:
            return FsStatus.INVALID_READ, 0
        want = max(0, min(len(into), f.size - offset))
        if want == 0:
            return FsStatus.SUCCESS, 0
        result = self._call(lib.f_lseek, f.handle, offset)  # also tells a handle a recovery invalidated
        if result != lib.FR_OK:
            return self._status(result), 0
        if f.links is not None and want >= DIRECT_READ:
            return self._read_direct(f.links, offset, into[:want])
        done = ffi.new("UINT *")
        result = self._call(lib.f_read, f.handle, ffi.from_buffer(into), want, done)
        return self._status(result), done[0]

    def _read_direct(self, links: LinkMap, offset: int, into: memoryview) -> tuple[FsStatus, int]:
        """Read the file's bytes from ``offset`` into ``into`` straight from the block device, by
        its link map (FatFs's state is untouched, so a failure needs no recovery)."""
        extents, at = [], 0
        for disk, size in links.extents(offset, len(into)):
            extents.append((disk, into[at:at + size]))
            at += size
        try:
            self._cache.read_uncached(extents)
        except BlockIoError as exc:
            self._log(f"read: {exc}")
            return FsStatus.ERROR, 0
        return FsStatus.SUCCESS, len(into)

    def write(self, fd: int, offset: int, data: memoryview) -> tuple[FsStatus, int]:
        """Write ``data`` at ``offset`` (zeros first over any gap past the end); the bytes written
        (fewer when the volume is full)."""
        f = self.files.open[fd]
        if not f.writable or offset + len(data) > MAX_FILE_SIZE:
            return FsStatus.INVALID_WRITE, 0
        if offset > f.size:
            status, _ = self._write_at(f, f.size, _zeros(offset - f.size))
            if status != FsStatus.SUCCESS:
                return status, 0
        return self._write_at(f, offset, [data])

    def _write_at(self, f: OpenFile, offset: int, chunks: Iterable[bytes | memoryview]) -> tuple[FsStatus, int]:
        result, done = self._call(lib.f_lseek, f.handle, offset), 0
        written = ffi.new("UINT *")
        for chunk in chunks:
            if result != lib.FR_OK:
                break
            result = self._call(lib.f_write, f.handle, ffi.from_buffer(chunk), len(chunk), written)
            done += written[0]
            f.size = max(f.size, offset + done)
            if written[0] < len(chunk):
                break  # the volume is full
        return self._status(result), done

    def size(self, fd: int) -> tuple[FsStatus, int]:
        return FsStatus.SUCCESS, self.files.open[fd].size

    def truncate(self, fd: int, length: int) -> FsStatus:
        """Cut the file to ``length`` bytes, or lengthen it with zeros (ERROR if the volume fills)."""
        f = self.files.open[fd]
        if not f.writable or length > MAX_FILE_SIZE:
            return FsStatus.INVALID_WRITE
        if length > f.size:
            status, _ = self._write_at(f, f.size, _zeros(length - f.size))
            return FsStatus.ERROR if status == FsStatus.SUCCESS and f.size < length else status
        result = self._call(lib.f_lseek, f.handle, length)
        if result == lib.FR_OK:
            result = self._call(lib.f_truncate, f.handle)
        if result == lib.FR_OK:
            f.size = length
        return self._status(result)

    def sync(self, fd: int) -> FsStatus:
        """Write back what FatFs holds for the file, then every cached block, then FLUSH the device."""
        status = self._status(self._call(lib.f_sync, self.files.open[fd].handle))
        if status == FsStatus.SUCCESS:
            try:
                self._cache.sync()
            except BlockIoError as exc:
                self._log(f"sync: {exc}")
                return FsStatus.ERROR
        return status

    # ---- names --------------------------------------------------------------------------
    def stat(self, path: bytes) -> tuple[FsStatus, FsStat | None]:
        if _key(path) == "":
            return FsStatus.SUCCESS, FsStat(mode=MODE_DIR, nlink=1, blksize=SECTOR)  # FatFs cannot stat the root
        info = ffi.new("FILINFO *")
        result = self._call(lib.f_stat, path, info)
        if result != lib.FR_OK:
            return self._status(result), None
        size = info.fsize
        mode = MODE_DIR if info.fattrib & lib.AM_DIR else MODE_FILE & ~(0o222 if info.fattrib & lib.AM_RDO else 0)
        return FsStatus.SUCCESS, FsStat(mode=mode, nlink=1, size=size, blksize=SECTOR, blocks=-(-size // SECTOR))

    def _in_use(self, path: bytes) -> bool:
        """Whether ``path``, or anything under it, is open."""
        key = _key(path)
        return any(o.key == key or o.key.startswith(key + "/")
                   for o in (*self.files.open.values(), *self.dirs.open.values()))

    def remove(self, path: bytes) -> FsStatus:
        """Remove a file (a directory is DIR_REMOVE's: ERROR here)."""
        status, stat = self.stat(path)
        if stat is None:
            return status
        if stat.mode == MODE_DIR:
            return FsStatus.ERROR
        if self._in_use(path):
            return FsStatus.SERVER_WAS_DENIED
        return self._status(self._call(lib.f_unlink, path))

    def rmdir(self, path: bytes) -> FsStatus:
        """Remove an empty directory (NOT_EMPTY otherwise; the root stays)."""
        status, stat = self.stat(path)
        if stat is None:
            return status
        if stat.mode != MODE_DIR:
            return FsStatus.NOT_DIRECTORY
        if _key(path) == "" or self._in_use(path):
            return FsStatus.SERVER_WAS_DENIED
        result = self._call(lib.f_unlink, path)
        return FsStatus.NOT_EMPTY if result == lib.FR_DENIED else self._status(result)

    def mkdir(self, path: bytes) -> FsStatus:
        return self._status(self._call(lib.f_mkdir, path))

    def rename(self, old: bytes, new: bytes) -> FsStatus:
        if self._in_use(old) or self._in_use(new):
            return FsStatus.SERVER_WAS_DENIED
        return self._status(self._call(lib.f_rename, old, new))

    # ---- directories --------------------------------------------------------------------
    def opendir(self, path: bytes) -> tuple[FsStatus, int]:
        if len(self.dirs.open) >= self.dirs.limit:
            return FsStatus.TOO_MANY_OPEN_FILES, 0
        handle = ffi.new("DIR *")
        result = self._call(lib.f_opendir, handle, path)
        if result == lib.FR_NO_PATH and self.stat(path)[0] == FsStatus.SUCCESS:
            return FsStatus.NOT_DIRECTORY, 0  # it names a file
        if result != lib.FR_OK:
            return self._status(result), 0
        fd = self.dirs.add(OpenDir(handle, _key(path), path))
        assert fd is not None
        return FsStatus.SUCCESS, fd

    def closedir(self, fd: int) -> FsStatus:
        result = self._call(lib.f_closedir, self.dirs.open.pop(fd).handle)
        return FsStatus.SUCCESS if result == lib.FR_INVALID_OBJECT else self._status(result)

    def readdir(self, fd: int) -> tuple[FsStatus, bytes]:
        """The next name in the directory; END_OF_DIRECTORY after the last."""
        d = self.dirs.open[fd]
        if d.unread is not None:
            name, d.unread = d.unread, None
            d.location += 1
            return FsStatus.SUCCESS, name
        info = ffi.new("FILINFO *")
        result = self._call(lib.f_readdir, d.handle, info)
        if result != lib.FR_OK:
            return self._status(result), b""
        name = ffi.string(info.fname)
        if not name:
            return FsStatus.END_OF_DIRECTORY, b""
        d.location += 1
        return FsStatus.SUCCESS, name.decode(CODE_PAGE).encode()

    def unread(self, fd: int, name: bytes) -> None:
        """Give back the name the last :meth:`readdir` returned: the next one returns it again."""
        d = self.dirs.open[fd]
        d.unread, d.location = name, d.location - 1

    def rewinddir(self, fd: int) -> FsStatus:
        d = self.dirs.open[fd]
        d.unread = None
        result = self._call(lib.f_readdir, d.handle, ffi.NULL)  # FatFs's f_rewinddir
        if result != lib.FR_OK:
            del self.dirs.open[fd]
        d.location = 0
        return self._status(result)

    def seekdir(self, fd: int, location: int) -> FsStatus:
        """Go to the ``location``-th entry (as DIR_TELL counts them): rewind, then read that many."""
        if location < 0:
            return FsStatus.ERROR
        status = self.rewinddir(fd)
        while status == FsStatus.SUCCESS and self.dirs.open[fd].location < location:
            status, _ = self.readdir(fd)
        return FsStatus.SUCCESS if status in (FsStatus.SUCCESS, FsStatus.END_OF_DIRECTORY) else status

    def telldir(self, fd: int) -> tuple[FsStatus, int]:
        return FsStatus.SUCCESS, self.dirs.open[fd].location

    @staticmethod
    def _status(result: int) -> FsStatus:
        return STATUS_OF.get(result, FsStatus.ERROR)


def fat_path(path: bytes) -> bytes | FsStatus:
    """A client's path as FatFs takes it (``0:/…`` in CP437), or why it cannot be one."""
    if b"\0" in path or not path:
        return FsStatus.INVALID_PATH
    try:
        text = path.decode("utf-8")
        encoded = text.encode(CODE_PAGE)
    except UnicodeError:
        return FsStatus.INVALID_NAME
    if any(len(part) > MAX_NAME for part in encoded.split(b"/")):
        return FsStatus.INVALID_NAME
    return DRIVE + (b"" if encoded.startswith(b"/") else b"/") + encoded


def _key(path: bytes) -> str:
    """What tells two FatFs paths of one file apart from others: FAT names ignore case."""
    return "/".join(p for p in path[len(DRIVE):].decode(CODE_PAGE).split("/") if p).casefold()


def _zeros(count: int) -> Any:
    """``count`` zero bytes, in chunks."""
    return (ZEROS[:min(CHUNK, count - i)] for i in range(0, count, CHUNK))
