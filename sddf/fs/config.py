"""File-system configs: what a LionsOS fs server and its client are handed (built by ``LionsOs.FileSystem``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from sddf.blk.config import BlkClientConfig
from sddf.fs.protocol import QUEUE_CAPACITY

#: LionsOS's share region. It costs nothing until touched: regions are sparse memfds.
SHARE_SIZE = 64 * 1024 * 1024
#: the reference server's limit on open files (and, here, on open directories)
MAX_OPEN_FILES = 256
#: 4 KiB blocks the FAT server caches (4 MiB) and reads ahead of a sequential reader (256 KiB)
CACHE_BLOCKS = 1024
READ_AHEAD_BLOCKS = 64


@dataclass
class FsConnection:
    """One side of an fs connection: the map names of the command queue, the completion queue and
    the share region (paths and data), the share region's size, the queues' capacity, the channel
    to the other side, and the connection's id."""

    command_queue: str
    completion_queue: str
    share: str
    share_size: int
    channel: int
    queue_capacity: int = QUEUE_CAPACITY
    id: int = 0

    def views(self, regions: Mapping[str, memoryview]) -> tuple[memoryview, memoryview, memoryview]:
        """(command queue, completion queue, share region) from a component's mapped regions."""
        return regions[self.command_queue], regions[self.completion_queue], regions[self.share][:self.share_size]


@dataclass
class FatServerConfig:
    """A FAT file-system server: its block client grant (one partition), the connection it serves,
    and its limits and cache."""

    blk: BlkClientConfig
    client: FsConnection
    max_open_files: int = MAX_OPEN_FILES
    cache_blocks: int = CACHE_BLOCKS
    read_ahead_blocks: int = READ_AHEAD_BLOCKS
