"""A small shell on a serial console: a line editor and a few commands.

Typed characters are echoed; Backspace/DEL erases; Enter runs the line. Commands: ``help``,
``echo WORDS``, ``uptime`` (from the timer driver, when the shell has a timer channel),
``counters`` (the bytes through its queues and what it dropped), ``clients`` (who shares the
console and how to switch: Ctrl-\\ then the client's number then Enter).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sddf.serial.client import SerialClient
from sddf.timer.client import time_now

NS_PER_S = 1_000_000_000
LINE_MAX = 256
BACKSPACE = (0x08, 0x7F)
ENTER = (0x0D, 0x0A)


@dataclass
class ShellConfig:
    timer: int | None = None
    prompt: str = "$ "
    clients: list[str] = field(default_factory=list)  # every client on the console, in switching order


class Shell(SerialClient):
    kind = "serial.client"
    Config = ShellConfig

    def setup(self) -> None:
        self.line = bytearray()
        self.after_cr = False  # the last byte was \r (a \n after it ends no second line)
        self.started_ns = self._now()
        self.commands: dict[str, Callable[[list[str]], str]] = {
            "help": lambda _args: "commands: " + " ".join(sorted(self.commands)),
            "echo": lambda args: " ".join(args),
            "uptime": self._uptime,
            "counters": lambda _args: " ".join(f"{k}={v}" for k, v in sorted(self.counters.items())
                                               if not k.startswith(("wakeups", "unproductive"))),
            "clients": self._clients,
        }
        self.write(f"{self.name}: pysddf shell, type help\r\n{self.config.prompt}")

    def received(self, data: bytes) -> None:
        echo = bytearray()
        for byte in data:
            after_cr, self.after_cr = self.after_cr, byte == 0x0D
            if byte in ENTER:
                if byte == 0x0A and after_cr:
                    continue  # the \n of a \r\n pair
                echo += b"\r\n"
                echo += self._run(self.line.decode(errors="replace")).encode()
                echo += self.config.prompt.encode()
                self.line.clear()
            elif byte in BACKSPACE:
                if self.line:
                    del self.line[-1]
                    echo += b"\b \b"
            elif 0x20 <= byte < 0x7F and len(self.line) < LINE_MAX:
                self.line.append(byte)
                echo.append(byte)
        self.write(bytes(echo))

    def _run(self, line: str) -> str:
        """The output of a command line (each line ended with \\r\\n)."""
        words = line.split()
        if not words:
            return ""
        command = self.commands.get(words[0])
        if command is None:
            return f"{words[0]}: unknown command (try help)\r\n"
        return command(words[1:]) + "\r\n"

    def _now(self) -> int | None:
        return time_now(self, self.config.timer) if self.config.timer is not None else None

    def _uptime(self, _args: list[str]) -> str:
        now = self._now()
        if now is None or self.started_ns is None:
            return "uptime: this shell has no timer"
        return f"up {(now - self.started_ns) / NS_PER_S:.3f} s"

    def _clients(self, _args: list[str]) -> str:
        if not self.config.clients:
            return "clients: not told"
        return "  ".join(f"{i}: {name}{' (me)' if name == self.name else ''}"
                         for i, name in enumerate(self.config.clients)) + \
            "\r\nswitch: Ctrl-\\ then the number then Enter"
