"""sddf.apps.netstack below TCP: Ethernet, ARP, IPv4, ICMP echo, UDP; drops are counted and
nothing raises on bad input. Frames are built and checked by tests/helpers/netframes.py,
which has its own RFC 1071 checksum."""
from __future__ import annotations

import socket
import struct

import pytest
from helpers.netframes import (
    ACK,
    BROADCAST_MAC,
    HOST_IP,
    HOST_MAC,
    STACK_IP,
    STACK_MAC,
    SYN,
    Frame,
    arp,
    ethernet,
    icmp_echo,
    icmp_frame,
    inet_checksum,
    ipv4,
    parse,
    tcp,
    udp,
    udp_frame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sddf.apps.netstack import ArpConfig, Config, NetStack, UdpDatagram

pytestmark = pytest.mark.timeout(60)
ECHO_PORT = 1235
PLAIN_PORT = 7000
OTHER_MAC = bytes.fromhex("020000000099")
SECOND = 1_000_000_000


def make_stack() -> NetStack:
    stack = NetStack(STACK_MAC, STACK_IP, seed=0)
    stack.udp_bind(ECHO_PORT, echo=True)
    stack.udp_bind(PLAIN_PORT)
    stack.tcp_listen(1236)
    return stack


@pytest.fixture
def stack() -> NetStack:
    return make_stack()


def exchange(stack: NetStack, frame: bytes, now_ns: int = 0) -> list[Frame]:
    """Feed one frame; return what the stack sent, parsed and checksum-verified."""
    stack.receive(frame, now_ns)
    return [parse(f) for f in stack.take_frames()]


def dropped(stack: NetStack, frame: bytes) -> str:
    """Feed a frame that must be dropped; return the one counter it incremented."""
    before = dict(stack.counters)
    assert exchange(stack, frame) == []
    assert stack.events() == []
    changed = {k: v - before.get(k, 0) for k, v in stack.counters.items() if v != before.get(k, 0)}
    assert len(changed) == 1 and list(changed.values()) == [1], changed
    return next(iter(changed))


def arp_frame(op: int, **kw: object) -> bytes:
    return ethernet(arp(op, **kw), dst=BROADCAST_MAC, ethertype=0x0806)  # type: ignore[arg-type]


def ip_bytes(text: str) -> bytes:
    return socket.inet_aton(text)


# --- Ethernet ---------------------------------------------------------------------------


def test_frames_for_other_macs_are_dropped(stack: NetStack) -> None:
    assert dropped(stack, udp_frame(b"x").replace(STACK_MAC, OTHER_MAC, 1)) == "eth_not_for_us"
    multicast = bytes.fromhex("01005e000001")
    assert dropped(stack, ethernet(arp(1), dst=multicast, ethertype=0x0806)) == "eth_not_for_us"


def test_unknown_ethertype_and_short_frames(stack: NetStack) -> None:
    assert dropped(stack, ethernet(b"\0" * 40, ethertype=0x86DD)) == "eth_unknown_type"
    assert dropped(stack, ethernet(b"\0" * 10, ethertype=0x86DD)) == "eth_unknown_type"
    assert dropped(stack, STACK_MAC + HOST_MAC) == "eth_truncated"
    assert dropped(stack, b"") == "eth_truncated"


# --- ARP --------------------------------------------------------------------------------


def test_arp_request_for_us_is_answered_and_learned(stack: NetStack) -> None:
    (reply,) = exchange(stack, arp_frame(1))
    assert (reply.eth_dst, reply.eth_src, reply.ethertype) == (HOST_MAC, STACK_MAC, 0x0806)
    assert reply.arp == (1, 0x0800, 6, 4, 2, STACK_MAC, ip_bytes(STACK_IP), HOST_MAC,
                         ip_bytes(HOST_IP))
    assert stack.arp.cache == {ip_bytes(HOST_IP): HOST_MAC}


def test_arp_for_someone_else_is_not_answered_nor_learned(stack: NetStack) -> None:
    assert dropped(stack, arp_frame(1, tpa="10.0.0.3")) == "arp_not_for_us"
    assert stack.arp.cache == {}


def test_arp_refreshes_a_known_entry_from_any_packet(stack: NetStack) -> None:
    exchange(stack, arp_frame(1))
    exchange(stack, arp_frame(1, sha=OTHER_MAC, tpa="10.0.0.3"))  # announcement of a new MAC
    assert stack.arp.cache[ip_bytes(HOST_IP)] == OTHER_MAC


def test_sending_to_an_unknown_address_resolves_first(stack: NetStack) -> None:
    stack.udp_send(5000, HOST_IP, 6000, b"queued")
    (request,) = [parse(f) for f in stack.take_frames()]
    assert request.eth_dst == BROADCAST_MAC
    assert request.arp == (1, 0x0800, 6, 4, 1, STACK_MAC, ip_bytes(STACK_IP), b"\0" * 6,
                           ip_bytes(HOST_IP))
    (datagram,) = exchange(stack, ethernet(arp(2, tha=STACK_MAC), ethertype=0x0806))
    assert (datagram.eth_dst, datagram.ip_dst, datagram.ports) == (HOST_MAC, HOST_IP, (5000, 6000))
    assert datagram.udp_data == b"queued" and datagram.ttl == 64
    stack.udp_send(5000, HOST_IP, 6000, b"direct")  # now cached: no request
    assert [parse(f).udp_data for f in stack.take_frames()] == [b"direct"]


def test_arp_retries_are_bounded_then_the_queue_is_dropped() -> None:
    config = Config(arp=ArpConfig(retry_ns=SECOND, retries=2, queue_limit=2))
    stack = NetStack(STACK_MAC, STACK_IP, config=config)
    for i in range(3):
        stack.udp_send(5000, "10.0.0.9", 6000, bytes([i]))
    assert stack.counters["arp_queue_full"] == 1
    requests = len(stack.take_frames())
    now = 0
    while (deadline := stack.next_timer_ns()) is not None:
        assert deadline > now
        now = deadline
        stack.on_timer(now)
        requests += len(stack.take_frames())
    assert requests == 3  # the first request and two retries
    assert stack.counters["arp_unresolved"] == 2 and now == 3 * SECOND


def test_unresolved_destinations_are_bounded() -> None:
    stack = NetStack(STACK_MAC, STACK_IP, config=Config(arp=ArpConfig(cache_size=4)))
    for host in range(10, 16):
        stack.udp_send(5000, f"10.0.0.{host}", 6000, b"x")
    assert len(stack.take_frames()) == 4 and stack.counters["arp_too_many_pending"] == 2


@pytest.mark.parametrize(("packet", "reason"), [
    (arp(1)[:20], "arp_truncated"),
    (b"\0\x06" + arp(1)[2:], "arp_bad_format"),
    (arp(3), "arp_bad_op"),
    (arp(1, sha=BROADCAST_MAC), "arp_bad_sender"),
    (arp(1, spa="255.255.255.255"), "arp_bad_sender"),
    (arp(1, spa=STACK_IP), "arp_address_conflict"),
])
def test_bad_arp_is_dropped(stack: NetStack, packet: bytes, reason: str) -> None:
    assert dropped(stack, ethernet(packet, ethertype=0x0806)) == reason
    assert stack.arp.cache == {}


# --- ICMP -------------------------------------------------------------------------------


def check_echo_reply(request: bytes, reply: Frame, proto: int) -> None:
    """The reply goes back where the request came from, from our address, with TTL 64."""
    assert (reply.eth_dst, reply.eth_src, reply.ethertype) == (request[6:12], STACK_MAC, 0x0800)
    assert (reply.ip_src, reply.ip_dst, reply.proto, reply.ttl) == (STACK_IP, HOST_IP, proto, 64)


def test_icmp_echo_request_is_answered(stack: NetStack) -> None:
    request = icmp_frame(b"abcdefgh" * 7, ident=0x1234, seq=9)
    (reply,) = exchange(stack, request)
    check_echo_reply(request, reply, 1)
    assert reply.l4[0:2] == b"\0\0"  # echo reply, code 0
    assert reply.l4[4:] == request[14 + 20 + 4:]  # identifier, sequence number, data
    assert inet_checksum(reply.l4) == 0  # independent check (parse() did it too)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=1472), ttl=st.integers(1, 255), ident=st.integers(0, 0xFFFF),
       tos=st.integers(0, 255),
       options=st.sampled_from([b"", b"\x01" * 4, b"\x07\x07\x04" + bytes(33)]))
def test_icmp_reply_checksums_for_any_request(data: bytes, ttl: int, ident: int, tos: int,
                                              options: bytes) -> None:
    """The reply's checksums are derived arithmetically: check them against a full recompute."""
    request = ethernet(ipv4(icmp_echo(ident, 1, data), 1, ttl=ttl, ident=ident, tos=tos,
                            options=options))
    (reply,) = exchange(make_stack(), request)
    check_echo_reply(request, reply, 1)
    assert reply.l4[4:] == struct.pack("!HH", ident, 1) + data


def test_other_icmp_is_not_answered(stack: NetStack) -> None:
    assert dropped(stack, ethernet(ipv4(icmp_echo(1, 1, b"x", kind=0), 1))) == "icmp_unhandled_type"
    to_all = ethernet(ipv4(icmp_echo(1, 1, b"x"), 1, dst="255.255.255.255"), dst=BROADCAST_MAC)
    assert dropped(stack, to_all) == "icmp_broadcast_echo"
    assert dropped(stack, ethernet(ipv4(b"\x08\0\0", 1))) == "icmp_truncated"


def test_bad_icmp_checksum_is_dropped(stack: NetStack) -> None:
    frame = bytearray(icmp_frame(b"data"))
    frame[-1] ^= 0x40
    assert dropped(stack, bytes(frame)) == "icmp_bad_checksum"


# --- UDP --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1472])
def test_udp_echo(stack: NetStack, size: int) -> None:
    payload = bytes(range(256)) * 6
    request = udp_frame(payload[:size], sport=40001)
    (reply,) = exchange(stack, request)
    check_echo_reply(request, reply, 17)
    assert reply.ports == (ECHO_PORT, 40001) and reply.udp_data == payload[:size]
    assert len(reply.l4) == 8 + size


def test_udp_echo_without_checksum_and_with_ethernet_padding(stack: NetStack) -> None:
    request = ethernet(ipv4(udp(b"hi", 40001, ECHO_PORT, with_checksum=False), 17)) + b"\0" * 16
    (reply,) = exchange(stack, request)
    assert reply.udp_data == b"hi" and reply.l4[6:8] == b"\0\0"  # no checksum asked, none sent


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=1472), ttl=st.integers(1, 255), ports=st.tuples(
    st.integers(1, 65535).filter(lambda port: port != ECHO_PORT), st.booleans()),
    options=st.sampled_from([b"", b"\x01" * 8]))
def test_udp_reply_checksums_for_any_request(data: bytes, ttl: int, ports: tuple[int, bool],
                                             options: bytes) -> None:
    """The reply's checksums are derived arithmetically: parse() recomputes them. (Requests to
    a broadcast address, or from the echo port itself, are not answered: tested elsewhere.)"""
    sport, with_checksum = ports
    request = ethernet(ipv4(udp(data, sport, ECHO_PORT, with_checksum=with_checksum), 17,
                            ttl=ttl, options=options))
    (reply,) = exchange(make_stack(), request)
    check_echo_reply(request, reply, 17)
    assert reply.ports == (ECHO_PORT, sport) and reply.udp_data == data


def test_udp_to_a_bound_port_is_an_event(stack: NetStack) -> None:
    assert exchange(stack, udp_frame(b"payload", sport=999, dport=PLAIN_PORT)) == []
    assert stack.events() == [UdpDatagram(PLAIN_PORT, HOST_IP, 999, b"payload")]
    stack.udp_unbind(PLAIN_PORT)
    assert dropped(stack, udp_frame(b"payload", dport=PLAIN_PORT)) == "udp_no_listener"


def test_udp_send_checks_its_arguments(stack: NetStack) -> None:
    with pytest.raises(ValueError, match="MTU"):
        stack.udp_send(1, HOST_IP, 2, bytes(1473))
    with pytest.raises(ValueError, match="loopback"):
        stack.udp_send(1, STACK_IP, 2, b"x")
    with pytest.raises(ValueError):
        stack.udp_send(1, "10.0.0", 2, b"x")
    with pytest.raises(ValueError, match="port"):
        stack.udp_send(1, HOST_IP, 65536, b"x")
    with pytest.raises(ValueError, match="port"):
        stack.udp_bind(0)


def test_bad_udp_is_dropped(stack: NetStack) -> None:
    frame = bytearray(udp_frame(b"data"))
    frame[-1] ^= 1
    assert dropped(stack, bytes(frame)) == "udp_bad_checksum"
    options = ethernet(ipv4(udp(b"data", 1, ECHO_PORT)[:-1] + b"X", 17, options=b"\x01" * 4))
    assert dropped(stack, options) == "udp_bad_checksum"
    long = udp(b"data", 1, ECHO_PORT)
    long = long[:4] + struct.pack("!H", 13) + long[6:]
    assert dropped(stack, ethernet(ipv4(long, 17))) == "udp_bad_length"
    assert dropped(stack, ethernet(ipv4(b"\0" * 7, 17))) == "udp_truncated"


# --- IPv4 -------------------------------------------------------------------------------


def with_header_field(frame: bytes, offset: int, value: bytes) -> bytes:
    """Rewrite IPv4 header bytes and fix the header checksum, so only the field is wrong."""
    header = bytearray(frame[14:34])
    header[offset:offset + len(value)] = value
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", inet_checksum(bytes(header)))
    return frame[:14] + bytes(header) + frame[34:]


def test_bad_ip_headers_are_dropped(stack: NetStack) -> None:
    frame = udp_frame(b"data")
    bad_checksum = bytearray(frame)
    bad_checksum[24] ^= 0xFF
    assert dropped(stack, bytes(bad_checksum)) == "ip_bad_checksum"
    assert dropped(stack, with_header_field(frame, 0, b"\x65")) == "ip_bad_version"
    assert dropped(stack, with_header_field(frame, 0, b"\x44")) == "ip_bad_ihl"
    assert dropped(stack, with_header_field(frame, 0, b"\x4f")) == "ip_bad_length"
    assert dropped(stack, with_header_field(frame, 2, b"\x00\x13")) == "ip_bad_length"
    assert dropped(stack, frame[:-1]) == "ip_bad_length"
    assert dropped(stack, frame[:30]) == "ip_truncated"
    assert dropped(stack, with_header_field(frame, 9, b"\x84")) == "ip_unknown_protocol"
    assert dropped(stack, with_header_field(frame, 16, ip_bytes("10.0.0.3"))) == "ip_not_for_us"
    assert dropped(stack, with_header_field(frame, 12, ip_bytes("224.0.0.1"))) == "ip_bad_source"
    assert dropped(stack, with_header_field(frame, 12, bytes(4))) == "ip_bad_source"
    assert dropped(stack, with_header_field(frame, 12, ip_bytes(STACK_IP))) == "ip_bad_source"


@pytest.mark.parametrize("flags_frag", [0x2000, 0x0001, 0x4000 | 0x00B9])
def test_fragments_are_dropped(stack: NetStack, flags_frag: int) -> None:
    frame = ethernet(ipv4(udp(b"part", 1, ECHO_PORT), 17, flags_frag=flags_frag))
    assert dropped(stack, frame) == "ip_fragment"


def test_options_are_skipped(stack: NetStack) -> None:
    frame = ethernet(ipv4(udp(b"opt", 1, ECHO_PORT), 17, options=b"\x94\x04\0\0"))  # router alert
    (reply,) = exchange(stack, frame)
    assert reply.udp_data == b"opt"


VALID_FRAMES = [
    udp_frame(b"x"), udp_frame(bytes(1472)), udp_frame(b"ev", dport=PLAIN_PORT), icmp_frame(),
    arp_frame(1), ethernet(ipv4(udp(b"o", 1, ECHO_PORT), 17, options=b"\x01" * 4)),
    ethernet(ipv4(tcp(40000, 1236, 7, 0, SYN, options=b"\x02\x04\x05\xb4"), 6)),
    ethernet(ipv4(tcp(40000, 1236, 7, 9, ACK, data=b"stray"), 6)),
]


@pytest.mark.parametrize("frame", VALID_FRAMES)
def test_every_truncation_is_dropped_and_counted(frame: bytes) -> None:
    stack = make_stack()
    for length in range(len(frame)):
        dropped(stack, frame[:length])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.binary(max_size=1600))
def test_random_bytes_never_raise(frame: bytes) -> None:
    stack = make_stack()
    stack.receive(frame, 0)
    for sent in stack.take_frames():
        parse(sent)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.integers(0, 3))
        position = draw(st.integers(0, len(frame)))
        if choice == 0 and position < len(frame):
            frame[position] = draw(st.integers(0, 255))
        elif choice == 1:
            del frame[position:]
        elif choice == 2:
            frame[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif position < len(frame):
            frame[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(frame)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=mutated_frames(), view=st.booleans())
def test_mutated_frames_never_raise_and_replies_stay_valid(frame: bytes, view: bool) -> None:
    """Whatever comes in, nothing raises and everything sent out is well-formed."""
    stack = make_stack()
    exchange(stack, arp_frame(1))  # so TCP answers (RST, SYN-ACK) can be sent
    stack.receive(memoryview(frame) if view else frame, 0)
    for sent in stack.take_frames():
        parse(sent)
    stack.events()
