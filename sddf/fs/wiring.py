"""``LionsOs.FileSystem.Fat``: wires a FAT server PD to its block partition and to its one client,
the way LionsOS's sdfgen does."""
from __future__ import annotations

from dataclasses import asdict

from sddf.blk.config import CLIENT_DATA_SIZE, CLIENT_QUEUE_CAPACITY
from sddf.blk.wiring import Blk
from sddf.fs.config import SHARE_SIZE, FsConnection
from sddf.fs.protocol import QUEUE_SIZE
from sddf.shm import round_to_pages
from sddf.system import Channel, Map, MemoryRegion, ProtectionDomain, SystemDescription


class Fat:
    """A FAT server ``fs`` serving ``client``: a block client of ``blk``'s partition ``partition``
    (added to ``blk`` here, so make this before ``blk.connect()``), its command and completion
    queues and share region with the client, and a channel between them."""

    def __init__(self, sdf: SystemDescription, fs: ProtectionDomain, client: ProtectionDomain, blk: Blk,
                 partition: int = 0, share_size: int = SHARE_SIZE,
                 blk_queue_capacity: int = CLIENT_QUEUE_CAPACITY, blk_data_size: int = CLIENT_DATA_SIZE) -> None:
        if share_size <= 0:
            raise ValueError(f"fs server {fs.name!r}: share_size must be positive (got {share_size})")
        self.sdf, self.fs, self.client, self.share_size = sdf, fs, client, round_to_pages(share_size)
        blk.add_client(fs, partition=partition, queue_capacity=blk_queue_capacity, data_size=blk_data_size)

    def connect(self) -> None:
        regions = []
        for part, size in (("command", QUEUE_SIZE), ("completion", QUEUE_SIZE), ("share", self.share_size)):
            mr = self.sdf.add_mr(MemoryRegion(f"fs_{self.fs.name}_{part}", round_to_pages(size)))
            self.fs.add_map(Map(mr, "rw"))
            self.client.add_map(Map(mr, "rw"))
            regions.append(mr.name)
        ch = self.sdf.add_channel(Channel(self.client, self.fs))
        command, completion, share = regions
        self.client.config["fs"] = asdict(FsConnection(command, completion, share, self.share_size, ch.pd_a_id))
        self.fs.config["client"] = asdict(FsConnection(command, completion, share, self.share_size, ch.pd_b_id))
