"""Component configs are built from what msgpack hands a PD: nested dicts become dataclasses."""
from __future__ import annotations

import pytest

from sddf.config import ConfigError, typed
from sddf.net.config import DataRegion, NetClientPort, NetVirtTxConfig, QueuePair

PAIR = {"free": "f", "active": "a", "capacity": 8, "channel": 1}


def test_nested_lists_and_optional_dataclasses_are_built() -> None:
    cfg = typed(NetVirtTxConfig, {"driver": PAIR, "clients": [
        {"name": "c0", "queues": PAIR, "mac": b"\2" * 6, "data": {"map": "", "io_addr": 4096, "size": 8192}},
        {"name": "c1", "queues": PAIR, "mac": b"\3" * 6}]}, "virt_tx")
    assert cfg.driver == QueuePair("f", "a", 8, 1)
    assert cfg.clients[0].data == DataRegion("", 4096, 8192) and cfg.clients[1].data is None
    assert isinstance(cfg.clients[1], NetClientPort) and cfg.batch == 64


@pytest.mark.parametrize("values, where", [
    ({"driver": {**PAIR, "colour": 1}, "clients": []}, r"virt_tx\.driver: unknown config field\(s\) \['colour'\]"),
    ({"driver": PAIR, "clients": [{"name": "c0", "queues": PAIR}]}, r"virt_tx\.clients\[0\]: bad config"),
    ({"driver": 7, "clients": []}, r"virt_tx\.driver: QueuePair must be a mapping, not int"),
    ({"driver": PAIR, "clients": PAIR}, r"virt_tx\.clients must be a list, not dict"),
])
def test_a_bad_nested_field_is_named(values: dict, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        typed(NetVirtTxConfig, values, "virt_tx")


@pytest.mark.parametrize("field, value, problem", [
    ("batch", True, r"virt_tx\.batch must be int, not bool"),
    ("batch", "64", r"virt_tx\.batch must be int, not str"),
])
def test_a_scalar_of_the_wrong_type_is_named(field: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        typed(NetVirtTxConfig, {"driver": PAIR, "clients": [], field: value}, "virt_tx")


def test_an_optional_field_reports_its_own_type() -> None:
    client = {"name": "c0", "queues": PAIR, "mac": b"\2" * 6, "data": {"map": 1, "io_addr": 0, "size": 0}}
    with pytest.raises(ConfigError, match=r"virt_tx\.clients\[0\]\.data\.map must be str, not int"):
        typed(NetVirtTxConfig, {"driver": PAIR, "clients": [client]}, "virt_tx")
