"""A FAT volume served through FatFs (the ``fatfs-ng`` binding of ChaN's FatFs, LionsOS's library).

:class:`Volume` keeps the client's open files and directories and turns each fs operation into
FatFs calls, answering with an :class:`FsStatus`. FatFs reads and writes sectors through
:class:`FatDisk`, which serves them from the server's :class:`BlockCache` (so a disk callback may
wait for block responses: the caller runs it on a cothread).

What the binding imposes, and how it is met:
- a disk callback must not raise (an exception inside FatFs leaves the interpreter in an error
  state: the binding reports later calls as SystemError). :class:`FatDisk` catches every failure,
  answers zeros and drops writes for the rest of the call, and :class:`Volume` turns the failure
  into ERROR after the call and recovers: it forgets the cache and mounts the volume again, which
  makes FatFs drop what it held in memory (the open handles then answer INVALID_FD);
- FatFs is built without re-entrancy or file locking (FF_FS_REENTRANT 0, FF_FS_LOCK 0): one
  cothread makes every FatFs call, and :class:`Volume` refuses what FatFs would corrupt the
  volume over — a file open for writing opened again, an open file (or a directory holding
  one) removed or renamed — with SERVER_WAS_DENIED;
- FatFs leaves the bytes of clusters it allocates as they were: a write past the end of a file,
  or a truncate that lengthens it, first writes zeros over the gap (as POSIX has it), so no
  stale data of a removed file shows through;
- paths are CP437 in this build (FF_LFN_UNICODE 0): a client's path must be UTF-8 that CP437 can
  spell (INVALID_NAME otherwise); FILINFO has no time stamps, so STAT's times are 0.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any, Callable

from fatfs import wrapper as ff
from fatfs.diskio import Disk

from sddf.apps.fs.blockcache import SECTOR, SECTORS_PER_BLOCK, BlockCache, BlockIoError
from sddf.fs.protocol import ACCESS_MODE_MASK, KNOWN_OPEN_FLAGS, MAX_NAME, FsOpenFlags, FsStat, FsStatus

# FatFs results (ff.h's FRESULT) and open modes
FR_OK, FR_DISK_ERR, FR_NO_FILE, FR_NO_PATH, FR_INVALID_NAME, FR_DENIED, FR_EXIST = 0, 1, 4, 5, 6, 7, 8
FR_INVALID_OBJECT, FR_WRITE_PROTECTED, FR_NO_FILESYSTEM = 9, 10, 13
FR_NOT_ENOUGH_CORE, FR_TOO_MANY_OPEN_FILES = 17, 18
FA_READ, FA_WRITE, FA_OPEN_EXISTING, FA_OPEN_ALWAYS = 0x01, 0x02, 0x00, 0x10
STATUS_OF = {
    FR_OK: FsStatus.SUCCESS, FR_NO_FILE: FsStatus.NO_FILE, FR_NO_PATH: FsStatus.INVALID_PATH,
    FR_INVALID_NAME: FsStatus.INVALID_NAME, FR_DENIED: FsStatus.SERVER_WAS_DENIED, FR_EXIST: FsStatus.ALREADY_EXISTS,
    FR_INVALID_OBJECT: FsStatus.INVALID_FD, FR_WRITE_PROTECTED: FsStatus.SERVER_WAS_DENIED,
    FR_NOT_ENOUGH_CORE: FsStatus.ALLOCATION_ERROR, FR_TOO_MANY_OPEN_FILES: FsStatus.TOO_MANY_OPEN_FILES,
}
DRIVE = b"0:"
#: fatfs-ng's table of drives (its Partition class fills it; one per process, and a server restarted
#: in the same process must take drive 0 over from its dead predecessor)
DRIVES: dict[int, Disk] = vars(ff)["__diskio_wrapper_disks"]
#: drive 0's file system object. FatFs keeps a pointer to the one mounted and writes to it when the
#: drive is mounted again, so it must outlive every Volume (a freed one corrupts the heap)
FATFS = ff.FATFS_Handle()
MAX_FILE_SIZE = 0xFFFF_FFFF  # FAT's limit (FatFs's FSIZE_t without exFAT is 32 bits)
CHUNK = 1 << 20  # bytes per FatFs read or write call (bounds the copies the binding makes)
ZEROS = bytes(CHUNK)
MODE_DIR, MODE_FILE = 0o040755, 0o100644
CODE_PAGE = codecs.lookup("cp437").name  # looked up now: once confined, a PD cannot import the codec


class FatDisk(Disk):
    """FatFs's disk: sectors of the partition from the block cache; see the module docstring."""

    def __init__(self, cache: BlockCache, log: Callable[[str], None]) -> None:
        super().__init__()
        self._cache = cache
        self._log = log
        #: a block transfer failed since the last call began: reads answer zeros, writes are dropped
        self.failed = False
        self.bug: BaseException | None = None  # a failure that is no I/O error (raised after the call)

    def ioctl_get_sector_count(self) -> int:
        return self._cache.blocks * SECTORS_PER_BLOCK

    def ioctl_get_sector_size(self) -> int:
        return SECTOR

    def ioctl_get_block_size(self) -> int:
        return SECTORS_PER_BLOCK

    def read(self, sector: int, count: int) -> Any:
        if not self.failed:
            try:
                return self._cache.read(sector, count // SECTOR)
            except BaseException as exc:  # noqa: BLE001 - nothing may escape into FatFs
                self._fail(exc)
        return bytes(count)

    def write(self, sector: int, count: int, buff: bytes) -> None:
        if not self.failed:
            try:
                self._cache.write(sector, count // SECTOR, buff)
            except BaseException as exc:  # noqa: BLE001 - nothing may escape into FatFs
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        if isinstance(exc, BlockIoError):
            self._log(f"block I/O failed: {exc}")
        else:
            self.bug = exc


class DiskFailed(Exception):
    """A FatFs call met a block I/O failure; the operation answers ERROR and the volume recovers."""


@dataclass
class OpenFile:
    handle: Any
    key: str
    path: bytes
    readable: bool
    writable: bool
    size: int


@dataclass
class OpenDir:
    handle: Any
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
        DRIVES[0] = self._disk
        self._disk.failed = False
        try:
            result = self._call(ff.pyf_mount, FATFS, DRIVE, 1)
        except DiskFailed:
            self._log("mounting the FAT volume failed: the block device failed a read")
            self._cache.drop()
            self._disk.failed = self.mounted = False
            return FsStatus.ERROR
        if result == FR_NO_FILESYSTEM:
            self._log("the partition holds no FAT file system FatFs can mount (FAT12/16/32 with 512-byte "
                      "sectors); not formatting it: make one with `sddf blk mkimage` or mkfs.fat")
        elif result != FR_OK:
            self._log(f"mounting the FAT volume failed: FatFs result {result}")
        self.mounted = result == FR_OK
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
        self._disk.failed = False
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
        fat_mode = (FA_READ if readable else 0) | (FA_WRITE if writable else 0)
        fat_mode |= FA_OPEN_ALWAYS if flags & FsOpenFlags.CREATE else FA_OPEN_EXISTING
        handle, info = ff.FIL_Handle(), ff.FILINFO_Handle()
        result = self._call(ff.pyf_open, handle, path, fat_mode)
        if result == FR_OK:
            result = self._call(ff.pyf_stat, path, info)
            if result != FR_OK:
                self._call(ff.pyf_close, handle)
        if result != FR_OK:
            return STATUS_OF.get(result, FsStatus.ERROR), 0
        fd = self.files.add(OpenFile(handle, key, path, readable, writable, info.get_size()))
        assert fd is not None  # room was checked above
        return FsStatus.SUCCESS, fd

    def close(self, fd: int) -> FsStatus:
        """Close (writing back what FatFs holds); a handle a recovery invalidated just goes."""
        result = self._call(ff.pyf_close, self.files.open.pop(fd).handle)
        return FsStatus.SUCCESS if result == FR_INVALID_OBJECT else self._status(result)

    def read(self, fd: int, offset: int, into: memoryview) -> tuple[FsStatus, int]:
        """Read from ``offset`` into ``into``; the bytes read (fewer at the end of the file)."""
        f = self.files.open[fd]
        if not f.readable:
            return FsStatus.INVALID_READ, 0
        want = max(0, min(len(into), f.size - offset))
        if want == 0:
            return FsStatus.SUCCESS, 0
        result = self._call(ff.pyf_lseek, f.handle, offset)
        done = 0
        while result == FR_OK and done < want:
            result, data = self._call(ff.pyf_read, f.handle, min(CHUNK, want - done))
            into[done:done + len(data)] = data
            done += len(data)
            if not data:
                break
        return self._status(result), done

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
        return self._write_at(f, offset, (data[i:i + CHUNK] for i in range(0, len(data), CHUNK)))

    def _write_at(self, f: OpenFile, offset: int, chunks: Any) -> tuple[FsStatus, int]:
        result, done = self._call(ff.pyf_lseek, f.handle, offset), 0
        for chunk in chunks:
            if result != FR_OK:
                break
            try:
                result, written = self._call(ff.pyf_write, f.handle, bytes(chunk))  # a private copy
            except ff.FatFSException as exc:
                result, written = exc.code, 0
            done += written
            f.size = max(f.size, offset + done)
            if written < len(chunk):
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
        result = self._call(ff.pyf_lseek, f.handle, length)
        if result == FR_OK:
            result = self._call(ff.pyf_truncate, f.handle)
        if result == FR_OK:
            f.size = length
        return self._status(result)

    def sync(self, fd: int) -> FsStatus:
        """Write back what FatFs holds for the file, then every cached block, then FLUSH the device."""
        status = self._status(self._call(ff.pyf_sync, self.files.open[fd].handle))
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
        info = ff.FILINFO_Handle()
        result = self._call(ff.pyf_stat, path, info)
        if result != FR_OK:
            return STATUS_OF.get(result, FsStatus.ERROR), None
        size = info.get_size()
        mode = MODE_DIR if info.is_directory() else MODE_FILE & ~(0o222 if info.is_readonly() else 0)
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
        return self._status(self._call(ff.pyf_unlink, path))

    def rmdir(self, path: bytes) -> FsStatus:
        """Remove an empty directory (NOT_EMPTY otherwise; the root stays)."""
        status, stat = self.stat(path)
        if stat is None:
            return status
        if stat.mode != MODE_DIR:
            return FsStatus.NOT_DIRECTORY
        if _key(path) == "" or self._in_use(path):
            return FsStatus.SERVER_WAS_DENIED
        result = self._call(ff.pyf_unlink, path)
        return FsStatus.NOT_EMPTY if result == FR_DENIED else self._status(result)

    def mkdir(self, path: bytes) -> FsStatus:
        return self._status(self._call(ff.pyf_mkdir, path))

    def rename(self, old: bytes, new: bytes) -> FsStatus:
        if self._in_use(old) or self._in_use(new):
            return FsStatus.SERVER_WAS_DENIED
        return self._status(self._call(ff.pyf_rename, old, new))

    # ---- directories --------------------------------------------------------------------
    def opendir(self, path: bytes) -> tuple[FsStatus, int]:
        if len(self.dirs.open) >= self.dirs.limit:
            return FsStatus.TOO_MANY_OPEN_FILES, 0
        handle = ff.DIR_Handle()
        result = self._call(ff.pyf_opendir, handle, path)
        if result == FR_NO_PATH and self.stat(path)[0] == FsStatus.SUCCESS:
            return FsStatus.NOT_DIRECTORY, 0  # it names a file
        if result != FR_OK:
            return STATUS_OF.get(result, FsStatus.ERROR), 0
        fd = self.dirs.add(OpenDir(handle, _key(path), path))
        assert fd is not None
        return FsStatus.SUCCESS, fd

    def closedir(self, fd: int) -> FsStatus:
        result = self._call(ff.pyf_closedir, self.dirs.open.pop(fd).handle)
        return FsStatus.SUCCESS if result == FR_INVALID_OBJECT else self._status(result)

    def readdir(self, fd: int) -> tuple[FsStatus, bytes]:
        """The next name in the directory; END_OF_DIRECTORY after the last."""
        d = self.dirs.open[fd]
        if d.unread is not None:
            name, d.unread = d.unread, None
            d.location += 1
            return FsStatus.SUCCESS, name
        info = ff.FILINFO_Handle()
        result = self._call(ff.pyf_readdir, d.handle, info)
        if result != FR_OK:
            return self._status(result), b""
        try:
            name = info.get_name()
        except UnicodeDecodeError:  # the binding decodes CP437 names as UTF-8
            d.location += 1
            where = d.path[len(DRIVE):].decode(CODE_PAGE)
            self._log(f"a name in {where!r} is not ASCII: the FatFs binding cannot hand it out")
            return FsStatus.INVALID_NAME, b""
        if not name:
            return FsStatus.END_OF_DIRECTORY, b""
        d.location += 1
        return FsStatus.SUCCESS, name.encode()

    def unread(self, fd: int, name: bytes) -> None:
        """Give back the name the last :meth:`readdir` returned: the next one returns it again."""
        d = self.dirs.open[fd]
        d.unread, d.location = name, d.location - 1

    def rewinddir(self, fd: int) -> FsStatus:
        d = self.dirs.open[fd]
        d.unread = None
        result = self._call(ff.pyf_closedir, d.handle)
        if result == FR_OK:
            result = self._call(ff.pyf_opendir, d.handle, d.path)
        if result != FR_OK:
            del self.dirs.open[fd]  # the handle is closed
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
