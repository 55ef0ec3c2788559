"""A block driver whose every request takes a few milliseconds (a slow disk), so a kill lands
while requests are in flight."""
from __future__ import annotations

import time
from typing import Callable

from sddf.drivers.blk.file import FileBlkDriver

DELAY_S = 0.005


class SlowFileBlkDriver(FileBlkDriver):
    def _job(self, code: int, io_addr: int, block: int, count: int) -> Callable[[], tuple[int, int]]:
        job = super()._job(code, io_addr, block, count)

        def slow() -> tuple[int, int]:
            time.sleep(DELAY_S)
            return job()
        return slow
