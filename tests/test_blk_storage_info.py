"""Block storage info as sDDF has it: ready published last, taken back, a NUL-terminated serial number."""
from __future__ import annotations

import pytest

from sddf.blk.queue import (READY_OFFSET, STORAGE_INFO_SIZE, BlkStorageInfo, read_storage_info, set_not_ready,
                            write_storage_info)

INFO = BlkStorageInfo(b"disk-1", False, 512, 1, 128, 0, 0, 0, 4096)


def test_ready_can_be_taken_back_and_given_again() -> None:
    page = bytearray(4096)
    assert read_storage_info(page) is None
    write_storage_info(page, INFO)
    assert read_storage_info(page) == INFO
    set_not_ready(page)
    assert read_storage_info(page) is None and page[READY_OFFSET] == 0
    write_storage_info(page, INFO._replace(capacity=8192))
    assert read_storage_info(page) == INFO._replace(capacity=8192)


def test_the_serial_number_is_the_text_before_its_nul() -> None:
    page = bytearray(4096)
    write_storage_info(page, INFO)
    page[6:10] = b"\0xyz"  # what a C device may leave after the terminator
    assert read_storage_info(page).serial_number == b"disk-1"  # type: ignore[union-attr]


@pytest.mark.parametrize("serial", [b"x" * 64, b"a\0b"], ids=["no room for the NUL", "embedded NUL"])
def test_a_serial_number_that_is_not_nul_terminated_text_is_refused(serial: bytes) -> None:
    page = bytearray(STORAGE_INFO_SIZE)
    with pytest.raises(ValueError, match="NUL-terminated"):
        write_storage_info(page, INFO._replace(serial_number=serial))
    assert page == bytearray(STORAGE_INFO_SIZE), "nothing written"
