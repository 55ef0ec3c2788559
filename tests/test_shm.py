"""Shared memory regions across processes, for both backends.

A region created here is attached by a worker process (memfd: the fd passed with
``pass_fds``; posix: the fd, or the ``/sddf-…`` name) and each side sees what the other
wrote. Read-only fds refuse writable maps, and a worker writing through a read-only map dies
of SIGSEGV. Sizes are validated. Closed regions leave nothing in /dev/shm, and the reaper
unlinks the named regions of a creator killed with SIGKILL.
"""
from __future__ import annotations

import errno
import functools
import json
import mmap
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import posix_ipc
import pytest

from sddf.shm import NAME_PREFIX, PAGE_SIZE, Backend, Region, RegionError
from xproc.procs import Shared, Spec, Worker, run_workers
from xproc.shm import CHILD_OFFSET, FROM_CHILD, FROM_PARENT

SIZE = 2 * PAGE_SIZE
WORKER_LIMIT_S = 20.0
REAPER_WAIT_S = 5.0
BACKENDS: tuple[Backend, ...] = ("memfd", "posix")
ATTACHES = [("memfd", "fd"), ("posix", "fd"), ("posix", "name")]  # (backend, how a worker attaches)

pytestmark = pytest.mark.timeout(30)


def shm_entries() -> set[str]:
    """The /dev/shm entries of the named regions this test process created (other processes,
    another test run say, may create and remove theirs meanwhile)."""
    return {path.name for path in Path("/dev/shm").glob(f"{NAME_PREFIX}{os.getpid()}-*")}


@functools.cache
def open_named_bug() -> str | None:
    """Why a posix region cannot be attached by name (a known sddf bug), or None if it can."""
    with Region.create("probe", PAGE_SIZE, "posix") as region:
        try:
            Region.open_named(region.posix_name).close()  # type: ignore[arg-type]
        except posix_ipc.ExistentialError as exc:
            return f"sddf bug: Region.open_named reads shm.size after shm.close_fd() ({exc})"
    return None


@pytest.fixture
def shared() -> Iterator[Shared]:
    with Shared() as s:
        yield s


def readonly_fd(shared: Shared, region: Region) -> int:
    fd = region.readonly_fd()
    shared.callback(os.close, fd)
    return fd


def worker_spec(role: str, shared: Shared, region: Region, how: str, writable: bool) -> Spec:
    """A worker in ``role`` that attaches ``region`` by an inherited fd or by name."""
    if how == "name":
        bug = open_named_bug()
        if bug is not None:
            pytest.xfail(bug)
        return role, {"name": region.posix_name, "writable": writable}, ()
    fd = region.fd if writable else readonly_fd(shared, region)
    return role, {"fd": fd, "size": region.size, "writable": writable}, (fd,)


def parent_region(shared: Shared, backend: Backend) -> Region:
    region = shared.region("xproc", SIZE, backend)
    region.view[:len(FROM_PARENT)] = FROM_PARENT
    return region


@pytest.mark.parametrize("backend, how", ATTACHES)
def test_region_is_shared_both_ways_and_closing_leaves_nothing(shared: Shared, backend: Backend,
                                                               how: str) -> None:
    before = shm_entries()
    region = parent_region(shared, backend)
    run_workers([worker_spec("shm.exchange", shared, region, how, True)], WORKER_LIMIT_S)
    assert bytes(region.view[CHILD_OFFSET:CHILD_OFFSET + len(FROM_CHILD)]) == FROM_CHILD
    if region.posix_name is not None:
        assert Path("/dev/shm" + region.posix_name).exists(), "a worker that only attached unlinked the region"
    region.close()
    assert not shm_entries() - before


@pytest.mark.parametrize("backend", BACKENDS)
def test_readonly_fd_refuses_writable_maps(shared: Shared, backend: Backend) -> None:
    region = parent_region(shared, backend)
    fd = readonly_fd(shared, region)
    with pytest.raises(PermissionError) as denied:
        mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    assert denied.value.errno == errno.EACCES
    with pytest.raises(RegionError, match="'ro'") as refused:
        Region.from_fd("ro", fd, SIZE, True)
    assert isinstance(refused.value.__cause__, PermissionError)
    with Region.from_fd("ro", os.dup(fd), SIZE, False) as reader:
        region.view[100:104] = b"seen"
        assert bytes(reader.view[100:104]) == b"seen"
        assert reader.view.readonly


@pytest.mark.parametrize("backend, how", ATTACHES)
def test_writing_through_a_readonly_map_kills_the_writer_with_sigsegv(shared: Shared, backend: Backend,
                                                                      how: str) -> None:
    region = parent_region(shared, backend)
    worker = Worker(*worker_spec("shm.write_readonly", shared, region, how, False))
    try:
        worker.proc.wait(WORKER_LIMIT_S)
        assert worker.proc.returncode == -signal.SIGSEGV, worker.report()
    finally:
        worker.stop()
    assert bytes(region.view[:len(FROM_PARENT)]) == FROM_PARENT


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [0, -PAGE_SIZE, 1, PAGE_SIZE - 1, PAGE_SIZE + 1])
def test_region_size_must_be_a_positive_number_of_pages(backend: Backend, size: int) -> None:
    before = shm_entries()
    with pytest.raises(RegionError, match="'odd'.*page size"):
        Region.create("odd", size, backend)
    assert not shm_entries() - before


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(RegionError, match="unknown backend"):
        Region.create("odd", PAGE_SIZE, "sysv")  # type: ignore[arg-type]


def test_a_named_region_exists_once(shared: Shared) -> None:
    shared.region("once", PAGE_SIZE, "posix")
    with pytest.raises(RegionError, match="already exists"):
        Region.create("once", PAGE_SIZE, "posix")


@pytest.mark.parametrize("name", ["a/b", "x" * 300])
def test_a_region_name_posix_cannot_take_is_refused_naming_it(name: str) -> None:
    before = shm_entries()
    with pytest.raises(RegionError, match=f"region '{name}'.*not a valid POSIX shared memory name"):
        Region.create(name, PAGE_SIZE, "posix")
    assert not shm_entries() - before


def test_attaching_a_missing_named_region_is_refused() -> None:
    with pytest.raises(RegionError, match="does not exist"):
        Region.open_named(f"/{NAME_PREFIX}{os.getpid()}-missing")


@pytest.mark.parametrize("backend", BACKENDS)
def test_attaching_more_than_the_region_holds_is_refused(shared: Shared, backend: Backend) -> None:
    region = shared.region("small", PAGE_SIZE, backend)
    fd = os.dup(region.fd)
    shared.callback(os.close, fd)  # from_fd takes the fd only once it has mapped it
    with pytest.raises(RegionError, match="'big'"):
        try:
            Region.from_fd("big", fd, 2 * PAGE_SIZE, True)
        except ValueError as exc:
            pytest.xfail(f"sddf bug: Region.__init__ lets mmap's ValueError through ({exc})")


def test_reaper_unlinks_the_named_regions_of_a_killed_creator() -> None:
    worker = Worker("shm.hold_named", {"count": 3})
    try:
        line = worker.readline()
        assert line, worker.report()
        names = json.loads(line)
        paths = [Path("/dev/shm" + name) for name in names]
        assert all(name.startswith(f"/{NAME_PREFIX}{worker.proc.pid}-") for name in names)
        assert all(path.exists() for path in paths)
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        deadline = time.monotonic() + REAPER_WAIT_S
        while any(path.exists() for path in paths) and time.monotonic() < deadline:
            time.sleep(0.02)  # the reaper is a detached process: nothing to block on
        assert not [path for path in paths if path.exists()], f"not unlinked after {REAPER_WAIT_S} s"
    finally:
        worker.stop()


def test_a_pointer_into_a_region_exports_the_mapping_not_the_view() -> None:
    """CPython 3.11's cycle collector can crash freeing a memoryview a cffi pointer still exports:
    a pointer is taken on the mapping underneath, which it keeps mapped while it lives."""
    from sddf import atomic

    region = Region.create("ptr", PAGE_SIZE)
    view = region.view[64:128]
    ptr = atomic.pointer(view)
    atomic.store_release_u32(ptr, 4, 0xABCD)
    assert view[4:8].tobytes() == (0xABCD).to_bytes(4, "little")
    view.release()  # not exported by the pointer
    with pytest.raises(RegionError, match="still in use"):
        region.close()  # the mapping is, while the pointer lives
    del ptr
    region.close()
