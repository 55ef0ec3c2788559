"""A net client that sends one frame from its ``setup``, before anything else has happened."""
from __future__ import annotations

from sddf.net.client import NetClient

FRAME = b"\xff" * 6 + bytes.fromhex("020000000002") + b"\x88\xb5" + b"early" + bytes(41)


class EarlySender(NetClient):
    def setup(self) -> None:
        self.send(FRAME)

    def received(self, frames: list[bytes]) -> None:
        pass
