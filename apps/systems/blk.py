"""The block example: a disk image with two partitions, one checked raw, one a FAT file system.

    sddf blk mkimage disk.img --size 64M --partition 16M --partition 32M,fat
    sddf run blk          # serves ./disk.img (or $SDDF_BLK_IMAGE)

blk_driver serves the image → blk_virt gives each client its partition → blk_verify writes,
flushes and reads back patterns on partition 0; the fat server PD makes partition 1 (FAT) a
LionsOS file system for fs_client, which runs a short script: it makes a directory, writes
files, lists them, and reads back a file put there on the host (``sddf blk put``) if there is
one. Afterwards ``sddf blk ls disk.img:1 /`` shows the files on the host. The two clients' log
lines go through the serial console (uart ← serial_virt_tx), on ``sddf run``'s stdout.
"""
from __future__ import annotations

import os

from sddf.classes import LionsOs, Sddf
from sddf.system import ProtectionDomain, SystemDescription

IMAGE_ENV = "SDDF_BLK_IMAGE"
DEFAULT_IMAGE = "disk.img"
DRIVER_RESTARTS = 10  # a faulting driver is restarted this often within a minute (it answers what it held)
#: what the demo's fs client does (see sddf.apps.fs.client)
DEMO_ACTIONS = [
    ["mkdir", "/docs"],
    ["write", "/docs/hello.txt", "Hello from pysddf's FAT server.\n"],
    ["write", "/docs/notes.txt", "Written through fs_client -> fat -> blk_virt -> blk_driver.\n"],
    ["list", "/docs"],
    ["read", "/docs/hello.txt"],
    ["read?", "/host.txt"],
]


def system(image: str | None = None, actions: list[list[str]] | None = None,
           verify_rounds: int = 3) -> SystemDescription:
    """``image``: the disk image (default $SDDF_BLK_IMAGE or ./disk.img); ``actions``: the fs
    client's script; ``verify_rounds``: the raw client's write/flush/read-back rounds (0: forever)."""
    image = os.path.abspath(image or os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))
    sdf = SystemDescription("blk")
    driver = sdf.add_pd(ProtectionDomain("blk_driver", "sddf.drivers.blk.file:FileBlkDriver", priority=200,
                                         fault_policy="restart", max_restarts=DRIVER_RESTARTS))
    virt = sdf.add_pd(ProtectionDomain("blk_virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    verify = sdf.add_pd(ProtectionDomain("blk_verify", "sddf.apps.blk.verify:BlkVerifier", priority=100))
    fat = sdf.add_pd(ProtectionDomain("fat", "sddf.apps.fs.fat:FatServer", priority=120))
    fs_client = sdf.add_pd(ProtectionDomain("fs_client", "sddf.apps.fs.client:FsClientPd", priority=100))
    uart = sdf.add_pd(ProtectionDomain("uart", "sddf.drivers.serial.pty:PtySerialDriver", priority=100))
    serial_virt_tx = sdf.add_pd(ProtectionDomain("serial_virt_tx", "sddf.virtualisers.serial.tx:SerialVirtTx",
                                                 priority=99))
    serial = Sddf.Serial(sdf, uart, serial_virt_tx)
    serial.add_client(verify)
    serial.add_client(fs_client)
    blk = Sddf.Blk(sdf, driver, virt, image)
    blk.add_client(verify, partition=0)
    verify.config.update(rounds=verify_rounds)
    fs = LionsOs.FileSystem.Fat(sdf, fat, fs_client, blk=blk, partition=1)
    fs_client.config.update(actions=DEMO_ACTIONS if actions is None else actions)
    blk.connect()
    fs.connect()
    serial.connect()
    return sdf
