"""The serial benchmark's load: a client that writes a fixed number of bytes as fast as virt_tx takes them.

:class:`Flood` writes ``total`` bytes of ``x`` then :data:`END` through its serial queue, keeping
at most :data:`WINDOW` bytes in its backlog (topped up each time virt_tx makes room).
"""
from __future__ import annotations

from dataclasses import dataclass

from sddf.serial.client import SerialClient

END = b"\r\nFLOOD-END\r\n"
WINDOW = 256 * 1024
CHUNK = 64 * 1024


@dataclass
class FloodConfig:
    total: int = 8 * 1024 * 1024


class Flood(SerialClient):
    kind = "serial.client"
    Config = FloodConfig

    def setup(self) -> None:
        self.left = self.config.total
        self._top_up()

    def console_room(self) -> None:
        self._top_up()

    def _top_up(self) -> None:
        assert self.console is not None
        while self.left and len(self.console.backlog) < WINDOW:
            n = min(CHUNK, self.left)
            self.left -= n
            self.write(b"x" * n + (b"" if self.left else END))
