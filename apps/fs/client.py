"""An fs client PD: mounts its file system, runs a script of operations and logs each result.

The script is its config's ``actions``, each a list of words:
``["mkdir", PATH]``, ``["rmdir", PATH]``, ``["write", PATH, TEXT]`` (the file then holds exactly
TEXT), ``["fill", PATH, BYTES]`` (a file of BYTES pattern bytes), ``["read", PATH]`` (logs the
size, the sha256 and, when short, the text), ``["list", PATH]``, ``["stat", PATH]``,
``["rename", OLD, NEW]``, ``["remove", PATH]``, ``["truncate", PATH, LENGTH]``; an operation
ending in ``?`` (``["read?", PATH]``) takes a missing PATH as its result, not a failure. Each result is
one log line ``<pd>: OP ARGS: RESULT`` (a failure: ``... failed: WHY``; a long or unprintable
word is shown shortened, as Python writes it), and at the end ``<pd>: done (N operations, F
failed)``, so a test or a demo can follow it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from sddf.fs.client import FsClientComponent, FsError
from sddf.fs.config import FsConnection
from sddf.fs.protocol import FsOpenFlags, FsStatus

SHOWN = 64  # a file read this short (and printable) is logged whole
SHOWN_WORD = 40  # a script word longer than this is logged cut
DEMO_ACTIONS = [["mkdir", "/docs"], ["write", "/docs/hello.txt", "hello from pysddf"],
                ["read", "/docs/hello.txt"], ["list", "/"], ["list", "/docs"]]


@dataclass
class FsClientPdConfig:
    fs: FsConnection
    actions: list[list[str]] = field(default_factory=lambda: [list(a) for a in DEMO_ACTIONS])


class FsClientPd(FsClientComponent):
    """Runs its ``actions`` against its fs server; see the module docstring."""

    kind = "fs.client"
    Config = FsClientPdConfig

    def body(self) -> None:
        try:
            self.fs.initialise()
        except FsError as exc:
            self.log(f"mounting failed: {exc}")
            return
        failed = 0
        for action in self.config.actions:
            words = " ".join(map(_shown, action))
            try:
                self.log(f"{words}: {self._do(action)}")
            except (FsError, ValueError, TypeError, IndexError, MemoryError) as exc:  # TypeError: missing words
                failed += 1
                self.log(f"{words} failed: {exc}")
        self.log(f"done ({len(self.config.actions)} operations, {failed} failed)")

    def _do(self, action: list[str]) -> str:
        """Run one action; what to log of its result."""
        op, args = action[0], action[1:]
        if op.endswith("?"):  # the path may be missing: then that is the result, not a failure
            try:
                return self._do([op[:-1], *args])
            except FsError as exc:
                if exc.status != FsStatus.NO_FILE:
                    raise
                return "not there"
        ops: dict[str, Callable[..., str]] = {
            "mkdir": lambda path: _ok(self.fs.mkdir(path)),
            "rmdir": lambda path: _ok(self.fs.rmdir(path)),
            "remove": lambda path: _ok(self.fs.remove(path)),
            "rename": lambda old, new: _ok(self.fs.rename(old, new)),
            "write": lambda path, text: self._write(path, text.encode()),
            "fill": lambda path, size: self._write(path, _pattern(int(size))),
            "read": self._read,
            "list": lambda path: " ".join(sorted(self.fs.listdir(path))) or "(empty)",
            "stat": self._stat,
            "truncate": self._truncate,
        }
        if op not in ops:
            raise ValueError(f"unknown operation {op!r} (known: {', '.join(ops)})")
        return ops[op](*args)

    def _write(self, path: str, data: bytes) -> str:
        self.fs.write_file(path, data)
        return f"{len(data)} bytes"

    def _read(self, path: str) -> str:
        data = self.fs.read_file(path)
        text = f"{len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}"
        if len(data) <= SHOWN and data.isascii() and data.decode().isprintable():
            text += f" {data.decode()!r}"
        return text

    def _stat(self, path: str) -> str:
        st = self.fs.stat(path)
        return f"{'directory' if st.mode & 0o040000 else 'file'} of {st.size} bytes"

    def _truncate(self, path: str, length: str) -> str:
        fd = self.fs.open(path, FsOpenFlags.WRITE_ONLY)
        try:
            self.fs.truncate(fd, int(length))
        finally:
            self.fs.close(fd)
        return f"{int(length)} bytes"


def _shown(word: str) -> str:
    """``word`` as a log line shows it: as it is if short and printable, else quoted and cut."""
    if len(word) <= SHOWN_WORD and word.isprintable() and " " not in word:
        return word
    return repr(word) if len(word) <= SHOWN_WORD else f"{word[:SHOWN_WORD]!r}… ({len(word)} characters)"


def _ok(_: None) -> str:
    return "ok"


def _pattern(size: int) -> bytes:
    """``size`` bytes of a pattern that shows misplaced blocks (each 4 KiB block differs)."""
    return b"".join(i.to_bytes(4, "little") * 1024 for i in range(-(-size // 4096)))[:size]
