"""The verifying block client on the test bench: rounds that pass, and a corrupted block that fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from sddf.apps.blk.verify import VerifyError, pattern
from sddf.blk.image import PartitionSpec, build
from sddf.blk.queue import BLK_TRANSFER_SIZE
from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription
from sddf.testing import Bench

BLOCKS = 64


def _bench(tmp_path: Path, rounds: int) -> tuple[Bench, str, int]:
    image = str(tmp_path / "disk.img")
    start = build(image, 8 << 20, "mbr", [PartitionSpec(4 << 20)])[0].start
    sdf = SystemDescription("verify")
    driver = sdf.add_pd(ProtectionDomain("drv", "sddf.drivers.blk.file:FileBlkDriver", priority=200))
    virt = sdf.add_pd(ProtectionDomain("virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    client = sdf.add_pd(ProtectionDomain("verify", "sddf.apps.blk.verify:BlkVerifier", priority=100))
    blk = Sddf.Blk(sdf, driver, virt, image, io_threads=0)
    blk.add_client(client, partition=0, queue_capacity=16)
    client.config.update(rounds=rounds, blocks=BLOCKS, blocks_per_request=3, flush_every=2)
    blk.connect()
    bench = Bench(sdf)
    bench.start()
    return bench, image, start


def test_rounds_leave_the_last_rounds_pattern_on_the_partition(tmp_path: Path, capfd) -> None:
    bench, image, start = _bench(tmp_path, rounds=3)
    with bench:
        bench.run()
        verifier = bench.component("verify")
        assert (verifier.round, verifier.verified, verifier.reissued) == (-1, 3 * BLOCKS, 0)
    assert "verify: done (3 rounds, 192 blocks verified, 0 re-issued)" in capfd.readouterr().out
    with open(image, "rb") as f:
        f.seek(start)
        for block in range(BLOCKS):
            assert f.read(BLK_TRANSFER_SIZE) == pattern(3, block)
        assert f.read(BLK_TRANSFER_SIZE) == bytes(BLK_TRANSFER_SIZE)  # nothing past the range it tests


def test_a_block_that_reads_back_wrong_is_a_fault_naming_it(tmp_path: Path) -> None:
    bench, image, start = _bench(tmp_path, rounds=2)
    with bench:
        verifier = bench.component("verify")
        bench.stall("drv")
        while not verifier.reading:  # the writes go through one driver pass at a time
            bench.resume("drv")
            bench.step()
            bench.stall("drv")
        with open(image, "r+b") as f:
            f.seek(start + 7 * BLK_TRANSFER_SIZE)
            f.write(b"rot")
        bench.resume("drv")
        with pytest.raises(VerifyError, match="block 7 of the partition reads back"):
            bench.run()
