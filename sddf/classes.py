"""``Sddf``: the namespace system files use, mirroring sdfgen's (one helper per device class)."""
from __future__ import annotations

from sddf.net.wiring import Net
from sddf.timer.wiring import Timer


class Sddf:
    """sdfgen's ``Sddf.Net`` and ``Sddf.Timer`` (Blk and Serial arrive with their drivers)."""

    Net = Net
    Timer = Timer
