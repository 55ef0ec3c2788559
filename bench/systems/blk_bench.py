"""The block benchmark's system: the image-file driver, the block virtualiser and one load client.

``blk_driver`` (sddf.drivers.blk.file) serves the image → ``blk_virt`` gives ``load`` partition 0
→ ``load`` (bench.blk_components:BlkLoad) runs one workload and prints its result line. What
varies (``system()``'s arguments; ``sddf run`` calls it without arguments, so each comes from the
environment when not given):

* ``image``       the disk image, with a partition table                ($BLK_BENCH_IMAGE, required)
* ``workload``    a name from bench.blk_components.SHAPES, or ``fat-read``: the FAT server on
                  partition 0 and bench.fat_components:FatRead reading /bench.bin through it
                                                             ($BLK_BENCH_WORKLOAD, rand4k-read-qd32)
* ``seconds``     the timed window                                   ($BLK_BENCH_SECONDS, default 2)
* ``warmup_s``    the untimed warm-up before it                      ($BLK_BENCH_WARMUP, default 0.2)
* ``io_threads``  the driver's I/O threads                  ($BLK_BENCH_IO_THREADS, default Sddf.Blk's)

``PYTHONPATH=. BLK_BENCH_IMAGE=disk.img sddf run bench/systems/blk_bench.py`` (from the repository
root: PDs import ``bench.blk_components``).
"""
from __future__ import annotations

import os
from dataclasses import asdict

from bench.blk_components import workload as make_workload
from bench.fat_components import WORKLOAD as FAT_WORKLOAD
from sddf.blk.config import IO_THREADS
from sddf.blk.queue import BLK_TRANSFER_SIZE
from sddf.classes import LionsOs, Sddf
from sddf.system import ProtectionDomain, SystemDescription

IMAGE_ENV, WORKLOAD_ENV, SECONDS_ENV, WARMUP_ENV, IO_THREADS_ENV = (
    "BLK_BENCH_IMAGE", "BLK_BENCH_WORKLOAD", "BLK_BENCH_SECONDS", "BLK_BENCH_WARMUP", "BLK_BENCH_IO_THREADS")
DEFAULT_WORKLOAD = "rand4k-read-qd32"
DEFAULT_SECONDS = 2.0
DEFAULT_WARMUP_S = 0.2
LOAD_PD = "load"


def env(image: str, workload: str, seconds: float, warmup_s: float, io_threads: int | None = None) -> dict[str, str]:
    """The environment that makes ``system()`` (run by ``sddf run``) build this variant."""
    given = {IMAGE_ENV: image, WORKLOAD_ENV: workload, SECONDS_ENV: seconds, WARMUP_ENV: warmup_s,
             IO_THREADS_ENV: io_threads}
    return {name: str(value) for name, value in given.items() if value is not None}


def system(image: str | None = None, workload: str | None = None, seconds: float | None = None,
           warmup_s: float | None = None, io_threads: int | None = None) -> SystemDescription:
    """The benchmark system; unset arguments come from the environment."""
    get = os.environ.get
    image = image or get(IMAGE_ENV)
    if not image:
        raise ValueError(f"blk_bench: give the disk image in ${IMAGE_ENV}")
    name = workload or get(WORKLOAD_ENV, DEFAULT_WORKLOAD)
    io_threads = int(get(IO_THREADS_ENV, IO_THREADS)) if io_threads is None else io_threads
    sdf = SystemDescription("blk_bench")
    driver = sdf.add_pd(ProtectionDomain("blk_driver", "sddf.drivers.blk.file:FileBlkDriver", priority=200))
    virt = sdf.add_pd(ProtectionDomain("blk_virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    blk = Sddf.Blk(sdf, driver, virt, os.path.abspath(image), io_threads=io_threads)
    if name == FAT_WORKLOAD:
        return _fat(sdf, blk)
    load = sdf.add_pd(ProtectionDomain(LOAD_PD, "bench.blk_components:BlkLoad", priority=100))
    w = make_workload(name, float(get(SECONDS_ENV, DEFAULT_SECONDS)) if seconds is None else seconds,
                      warmup_s=float(get(WARMUP_ENV, DEFAULT_WARMUP_S)) if warmup_s is None else warmup_s)
    blk.add_client(load, partition=0, queue_capacity=max(w.depth, 32),
                   data_size=max(w.depth * w.request_bytes, BLK_TRANSFER_SIZE))
    load.config["workload"] = asdict(w)
    blk.connect()
    return sdf


def _fat(sdf: SystemDescription, blk: Sddf.Blk) -> SystemDescription:
    """The FAT server on partition 0, serving a load that reads one file (bench.fat_components)."""
    fat = sdf.add_pd(ProtectionDomain("fat", "sddf.apps.fs.fat:FatServer", priority=120))
    load = sdf.add_pd(ProtectionDomain(LOAD_PD, "bench.fat_components:FatRead", priority=100))
    fs = LionsOs.FileSystem.Fat(sdf, fat, load, blk=blk, partition=0)
    blk.connect()
    fs.connect()
    return sdf
