"""``Sddf``: the namespace system files use, mirroring sdfgen's (one helper per device class)."""
from __future__ import annotations

from sddf.blk.wiring import Blk
from sddf.net.wiring import Net
from sddf.timer.wiring import Timer


class Sddf:
    """sdfgen's ``Sddf.Net``, ``Sddf.Blk`` and ``Sddf.Timer`` (Serial arrives with its driver)."""

    Blk = Blk
    Net = Net
    Timer = Timer
