"""The netstack against hostile input (issue "Recovery and hardening", item 6): SYN floods,
old ACKs, forged source addresses and ports, broadcasts, idle and non-reading connections,
the reserved IP flag, forged ARP, and requests whose replies would exceed the MTU. Each
section names the finding it covers; everything runs in-process on a fake clock."""
from __future__ import annotations

import socket

import pytest
from helpers.netframes import (
    ACK,
    BROADCAST_MAC,
    HOST_IP,
    HOST_MAC,
    PSH,
    RST,
    STACK_IP,
    STACK_MAC,
    SYN,
    Frame,
    arp,
    ethernet,
    icmp_echo,
    ipv4,
    parse,
    tcp,
    udp,
)
from sddf.apps.netstack import (
    Config,
    EchoService,
    NetStack,
    State,
    TcpAccepted,
    TcpClosed,
    UdpDatagram,
)
from test_netstack_tcp import PORT, SECOND, Net, Peer, data_of, make_net, mss_option

pytestmark = pytest.mark.timeout(120)
STACK_ECHO_PORT = 1235  # answered inside the stack
APP_ECHO_PORT = 1237  # answered by EchoService
PLAIN_PORT = 7000
SUBNET_BROADCAST = "10.0.0.255"
OTHER_IP, OTHER_MAC = "10.0.0.3", bytes.fromhex("020000000003")
FLOOD_MAC = bytes.fromhex("020000000066")
MINUTE = 60 * SECOND
IDLE = 5 * MINUTE  # TcpConfig's default idle_timeout_ns


class Echo:
    """A stack with UDP echo in the stack and in EchoService, TCP echo, and a plain port."""

    def __init__(self) -> None:
        self.stack = NetStack(STACK_MAC, STACK_IP, seed=0)
        self.stack.udp_bind(STACK_ECHO_PORT, echo=True)
        self.stack.udp_bind(PLAIN_PORT)
        self.service = EchoService(self.stack, udp_port=APP_ECHO_PORT, tcp_port=PORT)

    def answer(self, frame: bytes) -> list[Frame]:
        """Feed one frame and let the echo service react: what was sent, parsed, never more
        than MTU + 14 bytes per frame."""
        self.stack.receive(frame, 0)
        self.service.handle(self.stack.events())
        frames = self.stack.take_frames()
        assert all(len(f) <= self.stack.config.mtu + 14 for f in frames), list(map(len, frames))
        return [parse(f) for f in frames]

    def refused(self, frame: bytes) -> str:
        """Feed a frame that must go unanswered; returns the one counter it bumped."""
        before = dict(self.stack.counters)
        assert self.answer(frame) == []
        changed = {k: v - before.get(k, 0) for k, v in self.stack.counters.items()
                   if v != before.get(k, 0)}
        assert len(changed) == 1 and list(changed.values()) == [1], changed
        return next(iter(changed))


def udp_request(port: int, *, src: str = HOST_IP, dst: str = STACK_IP, sport: int = 40000,
                data: bytes = b"echo?", dst_mac: bytes = STACK_MAC, flags_frag: int = 0x4000,
                src_mac: bytes = HOST_MAC) -> bytes:
    return ethernet(ipv4(udp(data, sport, port, src=src, dst=dst), 17, src=src, dst=dst,
                         flags_frag=flags_frag), dst=dst_mac, src=src_mac)


def icmp_request(*, src: str = HOST_IP, dst: str = STACK_IP, data: bytes = b"ping",
                 dst_mac: bytes = STACK_MAC, flags_frag: int = 0x4000,
                 options: bytes = b"") -> bytes:
    return ethernet(ipv4(icmp_echo(7, 1, data), 1, src=src, dst=dst, flags_frag=flags_frag,
                         options=options), dst=dst_mac)


def tcp_syn(*, src: str = HOST_IP, sport: int = 40000, seq: int = 1,
            flags_frag: int = 0x4000, src_mac: bytes = HOST_MAC) -> bytes:
    return ethernet(ipv4(tcp(sport, PORT, seq, 0, SYN, src=src), 6, src=src,
                         flags_frag=flags_frag), src=src_mac)


def arp_frame(op: int, *, src_mac: bytes = HOST_MAC, **kw: object) -> bytes:
    return ethernet(arp(op, **kw), dst=BROADCAST_MAC, src=src_mac,  # type: ignore[arg-type]
                    ethertype=0x0806)


@pytest.fixture
def net() -> Net:
    return make_net()


@pytest.fixture
def echo() -> Echo:
    echo = Echo()
    echo.answer(arp_frame(1))  # the stack knows HOST_MAC: TCP answers need no ARP
    return echo


# --- 1: a SYN flood cannot keep a legitimate connection out ----------------------------


class SynFlood:
    """Spoofed SYNs at a steady rate, each from another address and port (10.1.0.0/16)."""

    def __init__(self, net: Net, per_minute: int) -> None:
        self.net, self.interval, self.sent = net, MINUTE // per_minute, 0

    def run(self, count: int) -> None:
        for _ in range(count):
            self.sent += 1
            i = self.sent
            src = f"10.1.{i // 250 % 250}.{1 + i % 250}"
            self.net.advance(self.interval)
            self.net.stack.receive(tcp_syn(src=src, sport=1024 + i % 60000, seq=i * 7919,
                                           src_mac=FLOOD_MAC), self.net.now)
        self.net.collect()  # the legitimate peer's segments are kept apart from the rest


def test_a_syn_flood_does_not_keep_a_legitimate_connection_out() -> None:
    """Half-open entries used to live the whole SYN-ACK schedule (63 s) and count against the
    1024 connections: ~1024 SYNs a minute kept everyone out. Now the oldest half-open entry
    makes room, so a handshake has max_half_open newer SYNs' time to finish."""
    net = make_net()
    echo = EchoService(net.stack)
    flood = SynFlood(net, per_minute=2048)
    flood.run(4096)  # two minutes of it
    peer = Peer(net)
    peer.send(SYN, options=mss_option(1460))
    flood.run(50)  # it goes on during the handshake (1.5 s: the SYN-ACK is sent again)
    syn_acks = peer.received()
    assert syn_acks and {(s.flags, s.seq) for s in syn_acks} == {(SYN | ACK, syn_acks[0].seq)}
    peer.ack = syn_acks[0].seq + 1
    flood.run(50)
    peer.send(ACK)
    peer.send(ACK | PSH, b"still there?")
    flood.run(50)
    accepted, *data = events = net.stack.events()
    assert isinstance(accepted, TcpAccepted) and data_of(data) == b"still there?"
    echo.handle(events)
    assert peer.read(peer.received()) == b"still there?"
    half_open = [c for c in net.stack.connections if c.state is State.SYN_RECEIVED]
    assert len(half_open) == net.stack.config.tcp.max_half_open
    assert net.stack.counters["tcp_half_open_evicted"] > 3000


# --- 2: RFC 5961 section 5, ACKs far behind SND.UNA --------------------------------------


def test_an_ack_more_than_the_largest_window_behind_snd_una_is_refused(net: Net) -> None:
    """Acceptable: SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT; otherwise the segment is
    dropped, its data too, and an ACK is sent."""
    peer = Peer(net)
    conn = peer.connect(window=1000)  # the largest window the peer announces
    net.stack.tcp_send(conn, bytes(800))
    peer.read(peer.received())
    peer.send(ACK, window=1000)
    snd_una = peer.ack
    peer.send(ACK | PSH, b"in range", ack=snd_una - 1000, window=1000)
    assert data_of(net.stack.events()) == b"in range"
    peer.received()
    peer.send(ACK | PSH, b"too old", ack=snd_una - 1001, window=1000)
    assert net.stack.events() == []
    (reply,) = peer.received()
    assert (reply.seq, reply.ack, reply.flags) == (snd_una, peer.seq - 7, ACK)
    assert net.stack.counters["tcp_ack_too_old"] == 1 and conn.state is State.ESTABLISHED


# --- 3: RFC 1122 source address and port rules, broadcasts -------------------------------


BAD_SOURCES = ["127.0.0.1", "0.1.2.3", SUBNET_BROADCAST, "0.0.0.0", "224.0.0.1", "240.0.0.1",
               "255.255.255.255"]


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_no_reply_goes_to_a_source_address_no_host_can_have(echo: Echo, source: str) -> None:
    """Loopback, "this network", the subnet's broadcast, multicast and class E sources."""
    requests = [udp_request(port, src=source) for port in (STACK_ECHO_PORT, APP_ECHO_PORT)]
    for request in (*requests, icmp_request(src=source), tcp_syn(src=source)):
        assert echo.refused(request) == "ip_bad_source"


@pytest.mark.parametrize("destination", ["255.255.255.255", SUBNET_BROADCAST])
def test_a_datagram_to_a_broadcast_address_is_not_echoed(echo: Echo, destination: str) -> None:
    """Every client on the link gets it: none may answer (RFC 1122 3.2.2.6 for ICMP)."""
    for port in (STACK_ECHO_PORT, APP_ECHO_PORT):
        request = udp_request(port, dst=destination, dst_mac=BROADCAST_MAC)
        assert echo.refused(request) == "udp_broadcast_echo"
    ping = icmp_request(dst=destination, dst_mac=BROADCAST_MAC)
    assert echo.refused(ping) == "icmp_broadcast_echo"


def test_a_broadcast_datagram_reaches_an_application_marked_as_such(echo: Echo) -> None:
    echo.stack.receive(udp_request(PLAIN_PORT, dst=SUBNET_BROADCAST, dst_mac=BROADCAST_MAC), 0)
    assert echo.stack.events() == [UdpDatagram(PLAIN_PORT, HOST_IP, 40000, b"echo?", True)]


def test_no_udp_echo_to_source_port_zero(echo: Echo) -> None:
    """RFC 768: port 0 means "no reply wanted". (EchoService used to raise on it.)"""
    for port in (STACK_ECHO_PORT, APP_ECHO_PORT):
        assert echo.refused(udp_request(port, sport=0)) == "udp_echo_to_port_zero"
    assert echo.refused(tcp_syn(sport=0)) == "tcp_source_port_zero"


def test_no_udp_echo_to_another_echo_port(echo: Echo) -> None:
    """A datagram from an echo port is another echo service's: answering it would start an
    endless echo between the two (one forged datagram is enough)."""
    for port in (STACK_ECHO_PORT, APP_ECHO_PORT):
        assert echo.refused(udp_request(port, sport=port)) == "udp_echo_loop"


def test_a_unicast_datagram_in_a_link_broadcast_frame_is_dropped(echo: Echo) -> None:
    """RFC 1122 3.3.6: a datagram received by link-layer broadcast must name a broadcast (or
    multicast) IP destination; one naming us is discarded, unanswered."""
    for port in (STACK_ECHO_PORT, APP_ECHO_PORT):
        assert echo.refused(udp_request(port, dst_mac=BROADCAST_MAC)) == "ip_unicast_in_link_broadcast"
    assert echo.refused(icmp_request(dst_mac=BROADCAST_MAC)) == "ip_unicast_in_link_broadcast"


@pytest.mark.parametrize("source_mac", [BROADCAST_MAC, bytes.fromhex("01005e000001"), STACK_MAC],
                         ids=["broadcast", "multicast", "ours"])
def test_no_reply_goes_to_a_group_or_our_own_mac(echo: Echo, source_mac: bytes) -> None:
    """Echo replies go back to the frame's source MAC: a group address would reach everyone."""
    assert echo.refused(udp_request(STACK_ECHO_PORT, src_mac=source_mac)) == "eth_bad_source"


# --- 4: idle connections, connection bounds, per-connection memory ----------------------


def test_an_idle_connection_is_reset_after_the_idle_timeout(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    net.advance(IDLE // 2)
    peer.send(ACK | PSH, b"progress")  # restarts the clock
    net.stack.events()
    peer.received()
    net.advance(IDLE - 1)
    peer.send(ACK)  # a bare ACK (keep-alive) is no progress
    assert conn.state is State.ESTABLISHED and net.stack.events() == []
    net.advance(1)
    assert net.stack.events() == [TcpClosed(conn, "timeout")]
    (reset,) = peer.received()
    assert reset.flags & RST and net.stack.counters["tcp_idle_timeout"] == 1
    assert net.stack.connections == [] and net.stack.next_timer_ns() is None
    assert net.stack.config.tcp.idle_timeout_ns == IDLE


def open_quietly(net: Net, ip: str, mac: bytes, count: int) -> int:
    """count handshakes from ip (ports 20000 on); how many the stack answered."""
    answered = 0
    for i in range(count):
        peer = Peer(net, sport=20000 + i, ip=ip, mac=mac)
        peer.send(SYN)
        syn_acks = [s for s in peer.received() if s.flags == SYN | ACK]
        if syn_acks:
            answered += 1
            peer.ack = syn_acks[0].seq + 1
            peer.send(ACK)
    net.stack.events()
    return answered


def test_one_host_cannot_hold_every_connection(net: Net) -> None:
    """~1021 idle connections from one host used to lock everyone else out for good: now one
    address holds max_connections_per_peer at most (its idlest makes room)."""
    open_quietly(net, HOST_IP, HOST_MAC, 1100)
    net.add_host(OTHER_IP, OTHER_MAC)
    other = Peer(net, ip=OTHER_IP, mac=OTHER_MAC)
    conn = other.connect()
    other.send(ACK | PSH, b"hello")
    assert data_of(net.stack.events()) == b"hello"
    per_peer = net.stack.config.tcp.max_connections_per_peer
    from_host = [c for c in net.stack.connections if c.remote_ip == HOST_IP]
    assert len(from_host) == per_peer and conn.state is State.ESTABLISHED
    assert net.stack.counters["tcp_evicted_peer_limit"] == 1100 - per_peer


def test_a_connection_beyond_the_overall_bound_evicts_the_idlest() -> None:
    net = make_net(max_connections=3)
    hosts = [(f"10.0.0.{10 + i}", bytes([2, 0, 0, 0, 0, 10 + i])) for i in range(4)]
    peers = []
    for ip, mac in hosts:
        net.add_host(ip, mac)
        peers.append(Peer(net, ip=ip, mac=mac))
    conns = []
    for peer in peers[:3]:
        conns.append(peer.connect())
        net.advance(SECOND)
    peers[0].send(ACK | PSH, b"busy")  # the first is the most recently active now
    net.stack.events()
    peers[3].connect()
    assert conns[1].state is State.CLOSED  # the idlest
    assert peers[1].received()[-1].flags & RST
    assert [c.state for c in (conns[0], conns[2])] == [State.ESTABLISHED] * 2
    assert net.stack.counters["tcp_evicted_connection_limit"] == 1


def test_a_host_at_its_bound_evicts_its_own_idlest_connection() -> None:
    net = make_net(max_connections_per_peer=2)
    first, second = Peer(net, sport=1), Peer(net, sport=2)
    conns = [first.connect(), second.connect()]
    net.advance(SECOND)
    first.send(ACK | PSH, b"busy")
    net.stack.events()
    Peer(net, sport=3).connect()  # asserts the TcpClosed(..., "evicted") came first
    assert [c.state for c in conns] == [State.ESTABLISHED, State.CLOSED]


def echo_buffered(echo: EchoService, conn: object) -> int:
    """Bytes the echo holds for conn: its backlog plus the stack's send buffer."""
    return len(echo._backlog.get(conn, b"")) + len(conn.sndbuf)  # type: ignore[attr-defined]


def test_a_peer_that_never_reads_holds_bounded_memory_then_times_out(net: Net) -> None:
    """The peer's window stays zero and it ignores ours, sending burst after burst: the echo
    holds at most send_buffer + receive_window bytes (128 KiB; it was 256 KiB + everything
    the bursts brought), and the connection, making no progress, is reset after the idle
    timeout though the peer answers every window probe."""
    echo = EchoService(net.stack)
    bound = 128 * 1024
    peer = Peer(net)
    conn = peer.connect(window=0)
    for _ in range(10):
        for _ in range(100):
            peer.send(ACK, bytes(1400), window=0)
        echo.handle(net.stack.events())
        peer.seq = peer.received()[-1].ack  # resynchronise with what we took
        assert echo_buffered(echo, conn) <= bound
    start = net.now
    for _ in range(50):
        if conn.state is State.CLOSED:
            break
        net.to_next_timer()
        if peer.received():
            peer.send(ACK, window=0)  # "still closed"
    assert conn.state is State.CLOSED and net.now - start <= IDLE
    assert net.stack.counters["tcp_idle_timeout"] == 1
    config = net.stack.config.tcp
    assert config.send_buffer + config.receive_window <= bound


def test_data_beyond_the_advertised_window_is_refused_even_within_one_batch(net: Net) -> None:
    peer = Peer(net)
    peer.connect()
    window = net.stack.config.tcp.receive_window
    for _ in range(window // 1000 + 5):
        peer.send(ACK, bytes(1000))  # no ACK from us in between: the window does not slide
    assert len(data_of(net.stack.events())) == window


# --- 5: the reserved ("evil") IP flag -----------------------------------------------------


def test_datagrams_with_the_reserved_flag_are_dropped(echo: Echo) -> None:
    """RFC 791: the flag must be zero. Replies used to copy it."""
    evil = 0x8000 | 0x4000
    for request in (udp_request(STACK_ECHO_PORT, flags_frag=evil), icmp_request(flags_frag=evil),
                    tcp_syn(flags_frag=0x8000)):
        assert echo.refused(request) == "ip_reserved_flag"


# --- 6: ARP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("packet", "reason"), [
    (arp(1, sha=STACK_MAC, spa="10.0.0.5"), "arp_sender_is_our_mac"),
    (arp(2, sha=STACK_MAC, spa="10.0.0.5", tha=STACK_MAC), "arp_sender_is_our_mac"),
    (arp(1, sha=bytes(6)), "arp_bad_sender"),
    (arp(1, spa="127.0.0.1"), "arp_bad_sender"),
    (arp(1, spa=SUBNET_BROADCAST), "arp_bad_sender"),
    (arp(1, spa="224.0.0.9"), "arp_bad_sender"),
], ids=["request-our-mac", "reply-our-mac", "zero-mac", "loopback", "subnet-broadcast",
        "multicast"])
def test_arp_refuses_our_own_mac_and_impossible_senders(packet: bytes, reason: str) -> None:
    echo = Echo()
    assert echo.refused(ethernet(packet, dst=BROADCAST_MAC, ethertype=0x0806)) == reason
    assert echo.stack.arp.cache == {}


def test_an_arp_frame_from_our_own_mac_is_refused() -> None:
    echo = Echo()
    assert echo.refused(arp_frame(1, src_mac=STACK_MAC, sha=STACK_MAC)) == "eth_bad_source"


def test_an_arp_probe_for_our_address_is_answered_to_the_prober_only() -> None:
    """RFC 5227: sender address 0.0.0.0. The reply goes to the prober's MAC (target address
    0.0.0.0, as RFC 826 fills it in); 0.0.0.0 is not learned."""
    echo = Echo()
    (reply,) = echo.answer(arp_frame(1, spa="0.0.0.0"))
    assert (reply.eth_dst, reply.ethertype) == (HOST_MAC, 0x0806)
    assert reply.arp[4:] == (2, STACK_MAC, socket.inet_aton(STACK_IP), HOST_MAC, bytes(4))
    assert echo.stack.arp.cache == {}


@pytest.mark.parametrize("destination", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "240.0.0.1"])
def test_no_ip_traffic_to_addresses_no_host_can_have(destination: str) -> None:
    stack = Echo().stack
    with pytest.raises(ValueError, match="neither a host nor a broadcast"):
        stack.udp_send(5000, destination, 6000, b"x")
    assert stack.take_frames() == []  # no ARP request for it either


def test_a_datagram_to_the_subnet_broadcast_goes_to_the_ethernet_broadcast() -> None:
    stack = Echo().stack
    stack.udp_send(5000, SUBNET_BROADCAST, 6000, b"all")
    (frame,) = map(parse, stack.take_frames())
    assert (frame.eth_dst, frame.ip_dst) == (BROADCAST_MAC, SUBNET_BROADCAST)
    assert frame.udp_data == b"all"


# --- 7: nothing larger than the MTU goes out ---------------------------------------------


def test_echo_requests_whose_reply_would_exceed_the_mtu_are_dropped(echo: Echo) -> None:
    """A frame larger than our MTU still arrives (the link may carry it): no reply to it may
    be larger than MTU + 14 bytes. (EchoService used to raise on it.)"""
    mtu = echo.stack.config.mtu
    assert echo.refused(icmp_request(data=bytes(mtu - 20 - 8 + 1))) == "icmp_echo_too_big"
    for port in (STACK_ECHO_PORT, APP_ECHO_PORT):
        assert echo.refused(udp_request(port, data=bytes(mtu - 20 - 8 + 1))) == "udp_echo_too_big"
    # The reply, without the request's IP options, fits: it is answered.
    (reply,) = echo.answer(icmp_request(data=bytes(mtu - 20 - 8), options=b"\x01" * 40))
    assert len(reply.l4) == mtu - 20


def test_tcp_segments_fit_a_small_mtu() -> None:
    net = Net(NetStack(STACK_MAC, STACK_IP, config=Config(mtu=576), seed=1))
    net.stack.tcp_listen(PORT)
    net.add_host(HOST_IP, HOST_MAC)
    peer = Peer(net)
    peer.send(SYN, options=mss_option(1460))
    (syn_ack,) = peer.received()
    assert syn_ack.options == mss_option(576 - 40)
    peer.ack = syn_ack.seq + 1
    peer.send(ACK)
    (accepted,) = net.stack.events()
    net.stack.tcp_send(accepted.conn, bytes(3000))
    frames = net.stack.take_frames()
    assert frames and max(map(len, frames)) == 576 + 14


def test_an_mtu_below_the_ipv4_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="MTU"):
        NetStack(STACK_MAC, STACK_IP, config=Config(mtu=60))
