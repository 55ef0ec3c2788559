"""SystemDescription.check(): one test per rule, each problem naming its culprit, all reported at once."""
from __future__ import annotations

import pytest

from components import importable
from sddf.shm import PAGE_SIZE
from sddf.system import Channel, InvalidSystem, Irq, Map, MemoryRegion, ProtectionDomain, SystemDescription

pytestmark = pytest.mark.timeout(10)

THING = "components.basic:Thing"
MIB = 0x100000


@pytest.fixture(autouse=True)
def _components(monkeypatch: pytest.MonkeyPatch) -> None:
    importable(monkeypatch)


def pd(name: str, priority: int = 100, program: str = THING) -> ProtectionDomain:
    return ProtectionDomain(name, program, priority=priority)


def system(*pds: ProtectionDomain) -> SystemDescription:
    sdf = SystemDescription("test")
    for p in pds:
        sdf.add_pd(p)
    return sdf


def problems(sdf: SystemDescription) -> list[str]:
    """The problems check() reports (it must report some, each also in the exception's message)."""
    with pytest.raises(InvalidSystem) as info:
        sdf.check()
    assert info.value.problems
    assert all(p in str(info.value) for p in info.value.problems)
    return info.value.problems


def only_problem(sdf: SystemDescription, *culprits: str) -> None:
    """check() reports exactly one problem, and it names every culprit."""
    found = problems(sdf)
    assert len(found) == 1, found
    for culprit in culprits:
        assert culprit in found[0], (culprit, found[0])


def test_duplicate_pd_names() -> None:
    only_problem(system(pd("twin"), pd("twin"), pd("other")), "protection domain", "'twin'")


def test_duplicate_region_names() -> None:
    sdf = system(pd("user"))
    sdf.add_mr(MemoryRegion("buffers", PAGE_SIZE))
    sdf.add_mr(MemoryRegion("buffers", 2 * PAGE_SIZE))
    only_problem(sdf, "memory region", "'buffers'")


@pytest.mark.parametrize("bad_id", [-1, 63, 100])
def test_channel_id_outside_0_62(bad_id: int) -> None:
    alpha, beta = pd("alpha"), pd("beta")
    sdf = system(alpha, beta)
    sdf.add_channel(Channel(alpha, beta, id_b=bad_id))
    only_problem(sdf, "'beta'", f"channel id {bad_id}", "0..62")


@pytest.mark.parametrize("second", ["channel", "irq"])
def test_channel_id_reused_in_a_pd(second: str) -> None:
    hub, a, b = pd("hub"), pd("a"), pd("b")
    sdf = system(hub, a, b)
    sdf.add_channel(Channel(hub, a, id_a=5))
    if second == "channel":
        sdf.add_channel(Channel(b, hub, id_b=5))
    else:
        sdf.add_irq(Irq(hub, "timerfd", id=5))
    only_problem(sdf, "'hub'", "duplicate channel id 5")


@pytest.mark.parametrize("callee_priority", [99, 100], ids=["lower", "equal"])
@pytest.mark.parametrize("caller_end", ["pd_a", "pd_b"])
def test_ppc_needs_a_strictly_higher_priority_callee(callee_priority: int, caller_end: str) -> None:
    caller, callee = pd("caller", 100), pd("callee", callee_priority)
    sdf = system(caller, callee)
    if caller_end == "pd_a":
        sdf.add_channel(Channel(caller, callee, pp_a=True))
    else:
        sdf.add_channel(Channel(callee, caller, pp_b=True))
    only_problem(sdf, "PPC from 'caller'", "into 'callee'", f"priority {callee_priority}")


@pytest.mark.parametrize("size", [PAGE_SIZE + 1, PAGE_SIZE // 2, 0, -PAGE_SIZE])
def test_region_size_must_be_whole_pages(size: int) -> None:
    sdf = system(pd("user"))
    sdf.add_mr(MemoryRegion("odd", size))
    only_problem(sdf, "memory region 'odd'", "page size")


def test_map_of_a_region_never_added() -> None:
    user = pd("user")
    user.add_map(Map(MemoryRegion("ghost", PAGE_SIZE)))
    only_problem(system(user), "'user'", "unknown memory region 'ghost'")


@pytest.mark.parametrize("perms", ["w", "rwx", "x"])
def test_map_perms_are_r_or_rw(perms: str) -> None:
    user = pd("user")
    sdf = system(user)
    user.add_map(Map(sdf.add_mr(MemoryRegion("buf", PAGE_SIZE)), perms, "mine"))  # type: ignore[arg-type]
    only_problem(sdf, "'user'", "'mine'", repr(perms))


@pytest.mark.parametrize(("program", "culprit"), [
    ("components.missing:Thing", "components.missing"),
    ("components.basic:Missing", "components.basic:Missing"),
    ("no_separator", "no_separator"),
])
def test_program_that_cannot_be_imported(program: str, culprit: str) -> None:
    only_problem(system(pd("broken", program=program)), "'broken'", "cannot load program", culprit)


@pytest.mark.parametrize("program", ["components.basic:NotAComponent", "components.basic:not_a_class"])
def test_program_that_is_not_a_component(program: str) -> None:
    only_problem(system(pd("impostor", program=program)), "'impostor'", program, "not a Component subclass")


def test_io_addresses_that_overlap() -> None:
    sdf = system(pd("driver"))
    sdf.add_mr(MemoryRegion("rx", 2 * PAGE_SIZE, io_addr=0x4000_0000))
    sdf.add_mr(MemoryRegion("tx", 2 * PAGE_SIZE, io_addr=0x4000_0000 + PAGE_SIZE))
    only_problem(sdf, "'rx'", "'tx'", "io addresses overlap")


def test_io_overlap_with_a_region_further_below() -> None:
    sdf = system(pd("driver"))
    sdf.add_mr(MemoryRegion("outer", 4 * MIB, io_addr=0x4000_0000))
    sdf.add_mr(MemoryRegion("inner1", PAGE_SIZE, io_addr=0x4000_0000 + MIB))
    sdf.add_mr(MemoryRegion("inner2", PAGE_SIZE, io_addr=0x4000_0000 + 2 * MIB))
    found = problems(sdf)
    assert any("'outer'" in p and "'inner1'" in p for p in found), found
    assert any("'outer'" in p and "'inner2'" in p for p in found), found


def test_io_address_must_be_page_aligned() -> None:
    sdf = system(pd("driver"))
    sdf.add_mr(MemoryRegion("dma", PAGE_SIZE, io_addr=0x4000_0000 + 8))
    only_problem(sdf, "'dma'")


@pytest.mark.parametrize("priority", [-1, 255])
def test_priority_outside_0_254(priority: int) -> None:
    only_problem(system(pd("greedy", priority)), "'greedy'", f"priority {priority}", "0..254")


def valid_system() -> SystemDescription:
    """Every kind of element, each used the way the rules allow."""
    driver, client, other = pd("driver", 200), pd("client", 100), pd("other", 0)
    sdf = system(driver, client, other)
    rx = sdf.add_mr(MemoryRegion("rx", 2 * PAGE_SIZE, io_addr=0x4000_0000))
    tx = sdf.add_mr(MemoryRegion("tx", PAGE_SIZE, io_addr=0x4000_0000 + 2 * PAGE_SIZE))  # adjacent, no overlap
    plain = sdf.add_mr(MemoryRegion("plain", MIB))
    driver.add_map(Map(rx, "rw"))
    driver.add_map(Map(tx, "r"))
    client.add_map(Map(rx, "r", "incoming"))
    client.add_map(Map(tx, "rw", "outgoing"))
    other.add_map(Map(plain))
    sdf.add_channel(Channel(client, driver, pp_a=True))
    sdf.add_channel(Channel(driver, other, id_a=62, id_b=0))
    sdf.add_channel(Channel(client, other, pp_b=True))
    sdf.add_irq(Irq(driver, "timerfd"))
    return sdf


def test_a_valid_system_passes() -> None:
    assert valid_system().check() is None


def test_auto_assigned_ids_are_the_lowest_free() -> None:
    hub, a, b, c = pd("hub"), pd("a"), pd("b"), pd("c")
    sdf = system(hub, a, b, c)
    sdf.add_channel(Channel(hub, a, id_a=0))
    sdf.add_channel(Channel(hub, b, id_a=2, id_b=1))
    first = sdf.add_channel(Channel(hub, b))
    irq = sdf.add_irq(Irq(hub, "timerfd"))
    last = sdf.add_channel(Channel(c, hub))
    assert (first.pd_a_id, first.pd_b_id) == (1, 0)
    assert irq.id == 3
    assert (last.pd_a_id, last.pd_b_id) == (0, 4)
    sdf.check()


def test_several_problems_are_all_reported_at_once() -> None:
    low, high, twin = pd("low", 10), pd("high", 300), pd("twin")
    sdf = system(low, high, twin, pd("twin"), pd("lost", program="components.missing:Thing"))
    sdf.add_mr(MemoryRegion("odd", 100))
    sdf.add_channel(Channel(high, low, pp_a=True))
    expected = [("'twin'",), ("'high'", "priority 300"), ("'lost'", "cannot load"), ("'odd'", "page size"),
                ("PPC from 'high'", "into 'low'")]
    found = problems(sdf)
    assert len(found) == len(expected), found
    for culprits in expected:
        assert any(all(c in p for c in culprits) for p in found), (culprits, found)


def test_a_pd_has_at_most_one_parent() -> None:
    parent, other, child = pd("parent", 120), pd("other", 120), pd("child")
    parent.add_child_pd(child)
    with pytest.raises(InvalidSystem) as err:
        other.add_child_pd(child)
    assert "'child'" in str(err.value) and "'parent'" in str(err.value) and "'other'" in str(err.value)


def test_child_ids_are_unique_and_in_range() -> None:
    parent, a, b = pd("parent", 120), pd("a"), pd("b")
    parent.add_child_pd(a, 3)
    with pytest.raises(InvalidSystem, match="child id 3 is already 'a'"):
        parent.add_child_pd(b, 3)
    parent.add_child_pd(b, 70)
    only_problem(system(parent, a, b), "'parent'", "child id 70")


def test_child_must_be_in_the_system() -> None:
    parent, stray = pd("parent", 120), pd("stray")
    parent.add_child_pd(stray)
    only_problem(system(parent), "'parent'", "'stray'")


# ---- configs: checked against the program's Config as the PD would receive them ------------------
CONFIGURED = "components.configured:Configured"


def configured(config: dict) -> SystemDescription:
    user = pd("user", program=CONFIGURED)
    user.config.update(config)
    return system(user)


@pytest.mark.parametrize(("config", "culprits"), [
    ({}, ["missing", "'count'"]),
    ({"count": 1, "colour": 2}, ["unknown config field", "'colour'"]),
    ({"count": "1"}, ["config.count", "int", "str"]),
    ({"count": True}, ["config.count", "int", "bool"]),
    ({"count": 1, "ratio": "fast"}, ["config.ratio", "float", "str"]),
    ({"count": 1, "label": None}, ["config.label", "str", "NoneType"]),
    ({"count": 1, "mac": "52:54:00:00:00:01"}, ["config.mac", "bytes", "str"]),
    ({"count": 1, "enabled": 1}, ["config.enabled", "bool", "int"]),
    ({"count": 1, "ids": 3}, ["config.ids", "list", "int"]),
    ({"count": 1, "ids": [1, "2"]}, ["config.ids[1]", "int", "str"]),
    ({"count": 1, "peer": {"channel": "x"}}, ["config.peer.channel", "int", "str"]),
    ({"count": 1, "peers": [{"channel": 1}, {"chan": 2}]}, ["config.peers[1]", "'chan'"]),
], ids=lambda v: repr(v)[:40])
def test_config_is_checked_against_the_programs_config_class(config: dict, culprits: list[str]) -> None:
    only_problem(configured(config), "PD 'user'", *culprits)


def test_a_config_of_the_right_types_passes() -> None:
    from components.configured import Peer

    configured({"count": 1, "ratio": 2, "ids": (1, 2), "mac": bytearray(6), "enabled": True,
                "peer": Peer(3), "peers": [{"channel": 4, "name": "p"}]}).check()


def test_a_program_without_a_config_class_takes_any_sendable_config() -> None:
    thing = pd("thing")
    thing.config.update(peer=1, anything={"goes": [1.5, "x"]})
    system(thing).check()
    thing.config["unsendable"] = {1, 2}
    only_problem(system(thing), "PD 'thing'", "config.unsendable", "cannot be sent")


@pytest.mark.parametrize(("config", "culprits"), [
    ({"count": 1, "ids": [1, {2, 3}]}, ["config.ids[1]", "set"]),
    ({"count": 2**70}, ["config.count", "int"]),
    ({"count": 1, "peer": {"channel": 1, "name": object()}}, ["config.peer.name", "object"]),
], ids=["set", "huge int", "object"])
def test_a_config_msgpack_cannot_send_is_refused(config: dict, culprits: list[str]) -> None:
    only_problem(configured(config), "PD 'user'", "cannot be sent", *culprits)


# ---- irq sources: checked without opening the device ---------------------------------------------
@pytest.fixture
def no_device_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: str, _options: dict[str, str]) -> int:
        pytest.fail(f"check() opened the device {source!r}")

    from sddf import devices
    for kind in devices.OPENERS:
        monkeypatch.setitem(devices.OPENERS, kind, refuse)


@pytest.mark.parametrize(("source", "culprit"), [
    ("tun:t0", "unknown device kind 'tun'"),
    ("tap:", "name"),
    ("tap:" + "t" * 16, "name"),
    ("tap:t0,speed=1", "'speed'"),
    ("tap:t0,mtu=big", "mtu"),
    ("tap:t0,mtu=0", "mtu"),
    ("tap:t0,mac=52:54:00", "mac"),
    ("tap:t0,addr=10.0.0.300/24", "addr"),
    ("tap:t0,up", "'up'"),
    ("timerfd:fast", "option"),
])
@pytest.mark.usefixtures("no_device_opened")
def test_a_bad_irq_source_is_refused(source: str, culprit: str) -> None:
    driver = pd("driver")
    sdf = system(driver)
    sdf.add_irq(Irq(driver, source))
    only_problem(sdf, "PD 'driver'", repr(source), culprit)


@pytest.mark.usefixtures("no_device_opened")
def test_good_irq_sources_pass_unopened() -> None:
    driver = pd("driver")
    sdf = system(driver)
    sdf.add_irq(Irq(driver, "tap:t0,mtu=1500,mac=52:54:00:12:34:56,addr=10.0.0.1/24"))
    sdf.add_irq(Irq(driver, "timerfd"))
    sdf.check()


# ---- names and numbers ---------------------------------------------------------------------------
BAD_NAMES = ["../../x", "a/b", "nul\0", "", "n" * 65, "new\nline"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_system_name_must_be_a_safe_file_name(name: str) -> None:
    sdf = system(pd("user"))
    sdf.name = name
    only_problem(sdf, "system name", repr(name))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_pd_and_region_names_must_be_sane(name: str) -> None:
    sdf = system(pd(name))
    sdf.add_mr(MemoryRegion(name, PAGE_SIZE))
    found = problems(sdf)
    assert len(found) == 2, found
    assert any("protection domain name" in p and repr(name) in p for p in found), found
    assert any("memory region name" in p and repr(name) in p for p in found), found


def test_a_name_of_64_characters_passes() -> None:
    sdf = system(pd("p" * 64))
    sdf.name = "s" * 64
    sdf.add_mr(MemoryRegion("m" * 64, PAGE_SIZE))
    sdf.check()


def test_a_negative_cpu_is_refused() -> None:
    pinned = pd("pinned")
    pinned.cpu = -1
    only_problem(system(pinned), "'pinned'", "cpu -1")


def test_a_region_over_the_size_limit_is_refused() -> None:
    sdf = system(pd("user"))
    sdf.add_mr(MemoryRegion("huge", 32 << 30))
    only_problem(sdf, "memory region 'huge'", "32.0 GiB", "16.0 GiB", "SDDF_MAX_REGION_SIZE")


@pytest.mark.parametrize(("limit", "ok"), [("64G", True), ("0x800000000", True), ("1M", False)])
def test_the_region_size_limit_is_configurable(monkeypatch: pytest.MonkeyPatch, limit: str, ok: bool) -> None:
    monkeypatch.setenv("SDDF_MAX_REGION_SIZE", limit)
    sdf = system(pd("user"))
    sdf.add_mr(MemoryRegion("big", 32 << 30 if ok else 2 * MIB))
    if ok:
        sdf.check()
    else:
        only_problem(sdf, "memory region 'big'", "over the limit")


@pytest.mark.parametrize("limit", ["lots", "-1G", "0"])
def test_a_bad_region_size_limit_is_named(monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    monkeypatch.setenv("SDDF_MAX_REGION_SIZE", limit)
    only_problem(system(pd("user")), "SDDF_MAX_REGION_SIZE", repr(limit))


def test_max_restarts_must_not_be_negative() -> None:
    restarting = pd("restarting")
    restarting.max_restarts = -1
    only_problem(system(restarting), "'restarting'", "max_restarts -1")


@pytest.mark.parametrize("poll_us", [-1, 1_000_001, 2.5, True])
def test_poll_us_is_whole_microseconds_up_to_a_second(poll_us: object) -> None:
    bad = pd("a")
    bad.poll_us = poll_us  # type: ignore[assignment]
    assert any("poll_us" in p for p in problems(system(bad))), problems(system(bad))
