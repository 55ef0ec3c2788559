"""The block system end to end, in real processes: `sddf blk mkimage`, `sddf run`, the image on the host.

* the FAT client's files and directories are on the image afterwards, as pyfatfs and mtools
  read it, and a file put there on the host is read back through the system;
* durability: the driver is killed -9 again and again while the verifying client writes with
  periodic FLUSHes; every request is answered exactly once (ERR_IO ones re-issued), and after the
  system stops the image holds exactly what the last acknowledged round wrote and flushed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pyfatfs.PyFatFS import PyFatFS

from apps.blk.verify import pattern
from helpers.sddf_cli import SDDF
from monitor_fixtures import SystemRun, run_dir  # noqa: F401  (fixture)
from sddf.blk.partitions import read_table

SYSTEM_FILE = '''\
from sddf.apps.systems import blk


def system():
    return blk.system({image!r}, actions={actions!r}, verify_rounds={rounds})
'''
RAW_SYSTEM_FILE = '''\
from sddf.classes import Sddf
from sddf.system import ProtectionDomain, SystemDescription


def system():
    sdf = SystemDescription("blk_raw")
    driver = sdf.add_pd(ProtectionDomain("blk_driver", "sddf.drivers.blk.file:FileBlkDriver", priority=200,
                                         fault_policy="restart", max_restarts=10))
    virt = sdf.add_pd(ProtectionDomain("blk_virt", "sddf.virtualisers.blk.virt:BlkVirt", priority=150))
    verify = sdf.add_pd(ProtectionDomain("blk_verify", "sddf.apps.blk.verify:BlkVerifier", priority=100))
    blk = Sddf.Blk(sdf, driver, virt, {image!r}, delay_us={delay_us})
    blk.add_client(verify, partition=0)
    verify.config.update(rounds={rounds})
    blk.connect()
    return sdf
'''
HOST_TEXT = b"put here on the host\n" * 100
SLOW_DISK_US = 5000  # every request takes 5 ms: requests are in flight whenever the driver is killed
KILLS = 5  # its system restarts the driver up to 10 times a minute


def _mkimage(path: Path, *partitions: str) -> None:
    args = [SDDF, "blk", "mkimage", str(path), "--size", "48M"]
    for p in partitions:
        args += ["--partition", p]
    subprocess.run(args, check=True, capture_output=True, text=True)


def _sddf_blk(*args: str) -> bytes:
    return subprocess.run([SDDF, "blk", *args], check=True, capture_output=True).stdout


def _partition(image: Path, index: int) -> tuple[int, int]:
    """(byte offset, size) of partition ``index``, by the parser the virtualiser uses."""
    with open(image, "rb") as f:
        def read(offset: int, size: int) -> bytes:
            f.seek(offset)
            return f.read(size)
        table = read_table(read, os.path.getsize(image))
    part = table.partitions[index]
    return part.start, part.size


def _start(run_dir: Path, text: str, name: str) -> SystemRun:  # noqa: F811
    system = run_dir / f"{name}_test.py"
    system.write_text(text)
    return SystemRun(system, name, run_dir)


def test_files_written_through_the_fat_server_are_on_the_image_and_host_files_read_back(run_dir: Path) -> None:  # noqa: F811
    image = run_dir / "disk.img"
    _mkimage(image, "8M", "24M,fat")
    subprocess.run([SDDF, "blk", "put", f"{image}:1", "-", "/host.txt"], input=HOST_TEXT, check=True,
                   capture_output=True)
    actions = [["mkdir", "/docs"], ["mkdir", "/docs/deep"], ["write", "/docs/a.txt", "alpha\n"],
               ["write", "/docs/deep/b.txt", "beta " * 2000], ["write", "/gone.txt", "x"],
               ["rename", "/docs/a.txt", "/docs/renamed.txt"], ["remove", "/gone.txt"],
               ["read", "/host.txt"], ["list", "/docs"]]
    run = _start(run_dir, SYSTEM_FILE.format(image=str(image), actions=actions, rounds=1), "blk")
    try:
        run.wait_for(r"^fs_client: done", timeout=60)
        run.wait_for(r"^blk_verify: done", timeout=60)
        read = run.wait_for(r"^fs_client: .*/host\.txt")
        assert hashlib.sha256(HOST_TEXT).hexdigest() in read.text
    finally:
        run.close()
    offset, _size = _partition(image, 1)
    fs = PyFatFS(str(image), offset=offset)  # it shows FatFs's lower-case 8.3 names in upper case
    try:
        assert sorted(name.lower() for name in fs.listdir("/")) == ["docs", "host.txt"]
        assert sorted(name.lower() for name in fs.listdir("/DOCS")) == ["deep", "renamed.txt"]
    finally:
        fs.close()
    assert _sddf_blk("cat", f"{image}:1", "/docs/renamed.txt") == b"alpha\n"
    assert _sddf_blk("cat", f"{image}:1", "/docs/deep/b.txt") == b"beta " * 2000
    assert b"renamed.txt" in _sddf_blk("ls", f"{image}:1", "/docs")
    if shutil.which("mcopy") is None:
        pytest.skip("mtools is not installed (.ci/run installs it): the pyfatfs check passed")
    target = f"{image}@@{offset}"
    listing = subprocess.run(["mdir", "-b", "-i", target, "::/docs/deep"], check=True, capture_output=True,
                             text=True).stdout
    assert "b.txt" in listing.lower()
    got = subprocess.run(["mcopy", "-n", "-i", target, "::/docs/deep/b.txt", "-"], check=True,
                         capture_output=True).stdout
    assert got == b"beta " * 2000
    fsck = shutil.which("fsck.fat")
    if fsck:
        part = run_dir / "part1.img"
        with open(image, "rb") as src, open(part, "wb") as dst:
            src.seek(offset)
            dst.write(src.read(_size))
        subprocess.run([fsck, "-n", str(part)], check=True, capture_output=True)


def test_killing_the_driver_during_flushed_writes_loses_and_repeats_nothing(run_dir: Path) -> None:  # noqa: F811
    image = run_dir / "disk.img"
    _mkimage(image, "16M")
    rounds = 8
    run = _start(run_dir, RAW_SYSTEM_FILE.format(image=str(image), rounds=rounds, delay_us=SLOW_DISK_US), "blk_raw")
    kills = 0
    try:
        mark = 0
        while kills < KILLS:
            mark = run.wait_for(r"^blk_verify: round \d+:", after=mark, timeout=60).index + 1
            time.sleep(0.02)  # into the next round's writes, each 5 ms at the slow driver
            os.kill(run.status()["blk_driver"]["pid"], signal.SIGKILL)
            kills += 1
            run.wait_for(r"^PD blk_driver: restarted", after=mark, timeout=30)
        done = run.wait_for(r"^blk_verify: done", timeout=30)
        counters = run.control({"cmd": "counters", "fresh": True})["counters"]
    finally:
        run.close()
    finished = re.search(rf"done \({rounds} rounds, \d+ blocks verified, (\d+) re-issued\)", done.text)
    assert finished and int(finished[1]) > 0, done.text  # the kills did catch requests at the driver
    assert counters["blk_verify"].get("blk_unknown_response", 0) == 0  # nothing answered twice
    offset, _ = _partition(image, 0)
    with open(image, "rb") as f:
        f.seek(offset)
        for block in range(256):
            assert f.read(4096) == pattern(rounds, block), f"block {block} is not the last round's"


def test_a_missing_image_is_a_clear_start_up_fault_naming_it(tmp_path: Path) -> None:
    system = tmp_path / "blk_missing.py"
    image = tmp_path / "nowhere" / "disk.img"
    system.write_text(RAW_SYSTEM_FILE.format(image=str(image), rounds=1, delay_us=0))
    done = subprocess.run([SDDF, "run", str(system), "--run-dir", str(tmp_path)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot open block image '{image}': No such file or directory" in done.stderr
    assert "sddf blk mkimage" in done.stderr and "Traceback" not in done.stderr
