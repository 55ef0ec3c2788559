"""``Sddf`` and ``LionsOs``: the namespaces system files use, mirroring sdfgen's (one helper per class)."""
from __future__ import annotations

from sddf.blk.wiring import Blk
from sddf.fs.wiring import Fat
from sddf.net.wiring import Net
from sddf.serial.wiring import Serial
from sddf.timer.wiring import Timer


class Sddf:
    """sdfgen's ``Sddf.Net``, ``Sddf.Blk``, ``Sddf.Serial`` and ``Sddf.Timer``."""

    Blk = Blk
    Net = Net
    Serial = Serial
    Timer = Timer


class LionsOs:
    """sdfgen's ``LionsOs``: ``LionsOs.FileSystem.Fat(sdf, fs_pd, client_pd, blk=blk, partition=0)``."""

    class FileSystem:
        Fat = Fat
