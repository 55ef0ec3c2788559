"""A serial client that only logs: ``lines`` numbered lines of ``width`` characters at init."""
from __future__ import annotations

from dataclasses import dataclass

from sddf.component import Component


@dataclass
class LoggerConfig:
    lines: int = 3
    width: int = 20


class Logger(Component):
    kind = "test.logger"
    Config = LoggerConfig

    def init(self) -> None:
        for i in range(self.config.lines):
            self.log(line(i, self.config.width))

    def notified(self, ch: int) -> None:
        pass

    def console_room(self) -> None:
        self.counters["console_room"] += 1


def line(i: int, width: int) -> str:
    """Log line ``i``: its number, then dots up to ``width`` characters."""
    return f"line {i:05d} ".ljust(width, ".")
