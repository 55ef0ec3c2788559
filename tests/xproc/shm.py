"""Workers for the shared-memory region tests: attach a region, write through a read-only map, hold regions."""
from __future__ import annotations

import json
import resource
import sys
from typing import Any

from sddf import atomic
from sddf.shm import PAGE_SIZE, Region

FROM_PARENT = b"written by the parent"
FROM_CHILD = b"written by the child"
CHILD_OFFSET = PAGE_SIZE  # where the child writes; the parent writes at 0


def attached(params: dict[str, Any]) -> Region:
    """The region named by ``params``: by an inherited ``fd`` (and ``size``) or by posix ``name``."""
    if "name" in params:
        return Region.open_named(params["name"], params["writable"])
    return Region.from_fd("shared", params["fd"], params["size"], params["writable"])


def exchange(params: dict[str, Any]) -> dict[str, Any]:
    """Check what the parent wrote, write our own bytes, detach."""
    region = attached(params)
    seen = bytes(region.view[:len(FROM_PARENT)])
    if seen != FROM_PARENT:
        raise AssertionError(f"the child sees {seen!r}, not the parent's {FROM_PARENT!r}")
    region.view[CHILD_OFFSET:CHILD_OFFSET + len(FROM_CHILD)] = FROM_CHILD
    region.close()
    return {}


def write_readonly(params: dict[str, Any]) -> dict[str, Any]:
    """Write through a read-only map with a raw store: this must kill us with SIGSEGV."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    region = attached(dict(params, writable=False))
    seen = bytes(region.view[:len(FROM_PARENT)])
    if seen != FROM_PARENT:
        raise AssertionError(f"the read-only map shows {seen!r}, not the parent's {FROM_PARENT!r}")
    atomic.store_release_u8(atomic.pointer(region.view), 0, 0)
    return {"wrote": True}


def hold_named(params: dict[str, Any]) -> None:
    """Create ``count`` posix regions, print their names, and wait (to be killed)."""
    regions = [Region.create(f"held{i}", PAGE_SIZE, "posix") for i in range(params["count"])]
    print(json.dumps([region.posix_name for region in regions]), flush=True)
    sys.stdin.read()
