"""The netstack's TCP against scripted peers, on a fake clock: handshake, data both ways,
windows, loss and retransmission, reordering, duplicates, FIN either side, RST, several
connections, bounded retries."""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest
from helpers.netframes import (
    ACK,
    BROADCAST_MAC,
    FIN,
    HOST_IP,
    HOST_MAC,
    PSH,
    RST,
    STACK_IP,
    STACK_MAC,
    SYN,
    arp,
    ethernet,
    ipv4,
    parse,
    tcp,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sddf.apps.netstack import (
    Config,
    EchoService,
    NetStack,
    State,
    TcpAccepted,
    TcpClosed,
    TcpConfig,
    TcpConn,
    TcpData,
    TcpEof,
    TcpWritable,
)

pytestmark = pytest.mark.timeout(60)
PORT = 1236
MS = 1_000_000
SECOND = 1000 * MS
RTO_MIN = 200 * MS  # after the handshake's zero-time RTT sample


def mss_option(mss: int) -> bytes:
    return struct.pack("!BBH", 2, 4, mss)


@dataclass
class Seg:
    """A segment the stack sent to a peer."""

    seq: int
    ack: int
    flags: int
    window: int
    data: bytes
    options: bytes


@dataclass
class Net:
    """The stack, the fake clock, and the segments it sent, sorted by peer address and port
    (ARP frames, e.g. requests for addresses the stack has not resolved, are left out)."""

    stack: NetStack
    now: int = 0
    inbox: dict[tuple[str, int], list[Seg]] = field(default_factory=dict)

    def collect(self) -> None:
        for frame in map(parse, self.stack.take_frames()):
            if frame.ethertype == 0x0806:
                continue
            assert frame.proto == 6 and frame.ttl == 64
            seq, ack, flags, window = frame.tcp
            self.inbox.setdefault((frame.ip_dst, frame.ports[1]), []).append(
                Seg(seq, ack, flags, window, frame.tcp_data, frame.tcp_options))

    def add_host(self, ip: str, mac: bytes) -> None:
        """A host on the link that asked for our MAC (so the stack knows its MAC too)."""
        self.stack.receive(ethernet(arp(1, sha=mac, spa=ip), dst=BROADCAST_MAC, src=mac,
                                    ethertype=0x0806), self.now)
        self.collect()

    def advance(self, ns: int) -> None:
        self.now += ns
        self.stack.on_timer(self.now)

    def to_next_timer(self) -> int:
        """Jump the clock to the stack's next deadline; returns how far it moved."""
        deadline = self.stack.next_timer_ns()
        assert deadline is not None and deadline >= self.now
        step, self.now = deadline - self.now, deadline
        self.stack.on_timer(self.now)
        return step


def make_net(**tcp_config: int) -> Net:
    stack = NetStack(STACK_MAC, STACK_IP, config=Config(tcp=TcpConfig(**tcp_config)), seed=1)
    stack.tcp_listen(PORT)
    net = Net(stack)
    net.add_host(HOST_IP, HOST_MAC)
    return net


@pytest.fixture
def net() -> Net:
    return make_net()


class Peer:
    """A scripted TCP peer at ip:sport (HOST_IP by default; another address must be known to
    the stack: `Net.add_host`): sends what the test says, keeps seq/ack."""

    def __init__(self, net: Net, sport: int = 40000, isn: int = 1000, *, ip: str = HOST_IP,
                 mac: bytes = HOST_MAC) -> None:
        self.net, self.sport, self.seq, self.ack = net, sport, isn, 0
        self.ip, self.mac = ip, mac
        self.conn: TcpConn | None = None

    def send(self, flags: int = ACK, data: bytes = b"", *, seq: int | None = None,
             ack: int | None = None, window: int = 65535, options: bytes = b"",
             dport: int = PORT) -> None:
        segment = tcp(self.sport, dport, self.seq if seq is None else seq,
                      self.ack if ack is None else ack, flags, window=window, data=data,
                      options=options, src=self.ip)
        self.net.stack.receive(ethernet(ipv4(segment, 6, src=self.ip), src=self.mac),
                               self.net.now)
        if seq is None:
            self.seq = (self.seq + len(data) + bool(flags & SYN) + bool(flags & FIN)) & 0xFFFFFFFF

    def received(self) -> list[Seg]:
        self.net.collect()
        return self.net.inbox.pop((self.ip, self.sport), [])

    def connect(self, mss: int | None = 1460, window: int = 65535) -> TcpConn:
        self.send(SYN, options=mss_option(mss) if mss else b"", window=window)
        (syn_ack,) = self.received()
        assert syn_ack.flags == SYN | ACK and syn_ack.ack == self.seq
        assert syn_ack.window == self.net.stack.config.tcp.receive_window
        assert syn_ack.options == mss_option(1460)
        self.ack = (syn_ack.seq + 1) & 0xFFFFFFFF
        self.send(ACK, window=window)
        *evicted, accepted = self.net.stack.events()  # the idlest may make room for this one
        assert all(isinstance(e, TcpClosed) and e.reason == "evicted" for e in evicted), evicted
        assert isinstance(accepted, TcpAccepted) and accepted.conn.state is State.ESTABLISHED
        assert (accepted.conn.remote_ip, accepted.conn.remote_port) == (self.ip, self.sport)
        assert self.received() == []
        self.conn = accepted.conn
        return accepted.conn

    def read(self, segments: list[Seg]) -> bytes:
        """Take in-order data from segments (as a real peer would); returns it."""
        data = b""
        for s in segments:
            if s.seq == self.ack and (s.data or s.flags & FIN):
                data += s.data
                self.ack = (self.ack + len(s.data) + bool(s.flags & FIN)) & 0xFFFFFFFF
        return data


def only_the_idle_timer_runs(net: Net) -> bool:
    """Nothing to retransmit or probe: the next deadline is a connection's idle timeout."""
    idle = net.stack.config.tcp.idle_timeout_ns
    return net.stack.next_timer_ns() == min(c.progress_ns + idle for c in net.stack.connections)


def data_of(events: list) -> bytes:
    assert all(isinstance(e, TcpData) for e in events), events
    return b"".join(e.data for e in events)


# --- handshake and data ----------------------------------------------------------------


def test_handshake_and_data_both_ways(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    assert "ESTABLISHED" in repr(conn) and conn.local_port == PORT
    peer.send(ACK | PSH, b"hello")
    assert net.stack.events() == [TcpData(conn, b"hello")]
    assert net.stack.tcp_send(conn, b"world") == 5
    (seg,) = peer.received()  # the reply carries the ACK
    assert (seg.ack, seg.data, seg.flags) == (peer.seq, b"world", ACK | PSH)
    assert peer.read([seg]) == b"world"
    peer.send(ACK)
    assert only_the_idle_timer_runs(net)  # everything acknowledged


def test_data_is_acknowledged_when_there_is_no_reply(net: Net) -> None:
    peer = Peer(net)
    peer.connect()
    peer.send(ACK, b"a" * 100)
    peer.send(ACK, b"b" * 100)
    (ack,) = peer.received()  # one coalesced ACK per batch
    assert ack.ack == peer.seq and ack.data == b"" and ack.window == 65535


@pytest.mark.parametrize(("announced", "used"), [(100, 100), (None, 536), (9000, 1460), (1, 64)])
def test_segments_respect_the_peers_mss(net: Net, announced: int | None, used: int) -> None:
    peer = Peer(net)
    conn = peer.connect(mss=announced)
    net.stack.tcp_send(conn, bytes(3000))
    sizes = [len(s.data) for s in peer.received()]
    assert max(sizes) == used and sum(sizes) == 3000


def test_sending_stays_within_the_peers_window(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect(window=3000)
    payload = random.Random(1).randbytes(10_000)
    assert net.stack.tcp_send(conn, payload) == 10_000
    got = peer.read(peer.received())
    assert len(got) == 3000
    peer.send(ACK, window=3000, ack=(peer.ack - 1500) & 0xFFFFFFFF)  # half of it
    got += peer.read(sent := peer.received())
    assert len(got) == 4500 and sum(len(s.data) for s in sent) == 1500
    while len(got) < 10_000:
        peer.send(ACK, window=3000)
        got += peer.read(peer.received())
    assert got == payload


def test_zero_window_is_probed_until_it_opens(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect(window=1000)
    net.stack.tcp_send(conn, bytes(5000))
    peer.read(peer.received())
    peer.send(ACK, window=0)
    assert peer.received() == []
    intervals = []
    for _ in range(3):
        intervals.append(net.to_next_timer())
        (probe,) = peer.received()
        assert probe.seq == (peer.ack - 1) & 0xFFFFFFFF and probe.data == b""  # below SND.UNA
        peer.send(ACK, window=0)  # the answer a real peer gives: still closed
        assert peer.received() == []
    assert intervals == [RTO_MIN, 2 * RTO_MIN, 4 * RTO_MIN]
    peer.send(ACK, window=65535)
    assert len(peer.read(peer.received())) == 4000


def test_send_buffer_is_bounded_and_signals_room(net: Net) -> None:
    net = make_net(send_buffer=4000)
    peer = Peer(net)
    conn = peer.connect()
    assert net.stack.tcp_send(conn, bytes(10_000)) == 4000
    assert net.stack.tcp_send(conn, b"more") == 0
    peer.read(peer.received())
    assert net.stack.events() == []
    peer.send(ACK)
    assert net.stack.events() == [TcpWritable(conn)]
    assert net.stack.tcp_send(conn, bytes(10_000)) == 4000


# --- receive window ---------------------------------------------------------------------


def test_paused_receive_window_runs_down_and_reopens() -> None:
    net = make_net(receive_window=4000)
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_pause_receive(conn)
    peer.send(ACK, bytes(1000))
    assert len(data_of(net.stack.events())) == 1000  # delivered; the app just asks for less
    (ack,) = peer.received()
    assert (ack.ack, ack.window) == (peer.seq, 3000)  # the right edge stays put
    peer.send(ACK, bytes(3500))  # 500 bytes beyond the window are cut off
    assert len(data_of(net.stack.events())) == 3000
    (ack,) = peer.received()
    assert (ack.ack, ack.window) == ((peer.seq - 500) & 0xFFFFFFFF, 0)
    peer.seq = ack.ack
    peer.send(ACK, b"x")  # nothing fits now
    assert net.stack.events() == [] and peer.received()[0].window == 0
    peer.seq = ack.ack
    net.stack.tcp_pause_receive(conn, False)
    (update,) = peer.received()
    assert (update.ack, update.window) == (ack.ack, 4000)


def test_acks_still_count_while_our_window_is_closed() -> None:
    net = make_net(receive_window=1000)
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_pause_receive(conn)
    peer.send(ACK, bytes(1000))
    net.stack.events()
    net.stack.tcp_send(conn, b"reply")
    (seg,) = peer.received()
    assert seg.window == 0 and peer.read([seg]) == b"reply"
    peer.send(ACK, b"x")  # a window probe that also acknowledges "reply"
    assert net.stack.events() == [] and peer.received()[0].ack == seg.ack  # byte refused
    assert only_the_idle_timer_runs(net)  # ... but the ACK was taken


# --- loss, retransmission, reordering, duplicates --------------------------------------


def test_lost_segments_are_retransmitted_after_the_rto(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    payload = random.Random(2).randbytes(3000)
    net.stack.tcp_send(conn, payload)
    first = peer.received()
    assert [len(s.data) for s in first] == [1460, 1460, 80]
    assert net.to_next_timer() == RTO_MIN
    (again,) = peer.received()
    assert again.seq == first[0].seq and again.data == first[0].data
    assert net.to_next_timer() == 2 * RTO_MIN  # backoff
    (again,) = peer.received()
    assert again.seq == first[0].seq
    peer.read([again])
    peer.send(ACK)  # partial ACK: the next hole is resent at once
    (hole,) = peer.received()
    assert hole.seq == first[1].seq and hole.data == first[1].data
    got = peer.read([hole, first[2]])
    peer.send(ACK)
    assert first[0].data + got == payload
    assert only_the_idle_timer_runs(net) and peer.received() == []


def test_three_duplicate_acks_trigger_a_fast_retransmit(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect(mss=100)
    net.stack.tcp_send(conn, bytes(500))
    segs = peer.received()
    peer.read(segs[:1])  # the second segment is lost
    peer.send(ACK)  # acknowledges the first
    peer.send(ACK)
    peer.send(ACK)  # (the third and fourth segments arrive)
    assert peer.received() == []
    peer.send(ACK)  # the third duplicate
    (resent,) = peer.received()
    assert resent.seq == segs[1].seq and net.stack.counters["tcp_fast_retransmit"] == 1


def test_retries_are_bounded_then_the_connection_is_reset() -> None:
    net = make_net(max_retries=4)
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_send(conn, b"unanswered")
    (original,) = peer.received()
    steps = [net.to_next_timer() for _ in range(5)]
    assert steps == [RTO_MIN, 2 * RTO_MIN, 4 * RTO_MIN, 8 * RTO_MIN, 16 * RTO_MIN]
    *resent, reset = peer.received()
    assert [s.data for s in resent] == [b"unanswered"] * 4
    assert reset.flags & RST and reset.seq == original.seq + len(original.data)
    assert net.stack.events() == [TcpClosed(conn, "timeout")]
    assert conn.state is State.CLOSED and net.stack.connections == []
    assert net.stack.tcp_send(conn, b"late") == 0


def test_out_of_order_segments_are_held_until_the_gap_fills(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    start = peer.seq
    peer.send(ACK, b"B" * 100, seq=start + 100)
    peer.send(ACK, b"C" * 100, seq=start + 200)
    dup_acks = peer.received()
    assert [a.ack for a in dup_acks] == [start, start]  # immediate duplicate ACKs
    assert net.stack.events() == []
    peer.send(ACK, b"A" * 100, seq=start)
    assert data_of(net.stack.events()) == b"A" * 100 + b"B" * 100 + b"C" * 100
    assert peer.received()[-1].ack == start + 300
    assert conn.state is State.ESTABLISHED


def test_duplicates_and_overlaps_deliver_each_byte_once(net: Net) -> None:
    peer = Peer(net)
    peer.connect()
    start = peer.seq
    peer.send(ACK, b"0123456789", seq=start)
    peer.send(ACK, b"0123456789", seq=start)  # duplicate
    peer.send(ACK, b"56789abcde", seq=start + 5)  # overlaps by five
    assert data_of(net.stack.events()) == b"0123456789abcde"
    assert net.stack.counters["tcp_unacceptable"] == 1
    assert peer.received()[-1].ack == start + 15


def test_a_fin_ahead_of_a_gap_waits_for_it(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    start = peer.seq
    peer.send(ACK | FIN, b"tail", seq=start + 4)
    assert net.stack.events() == [] and conn.state is State.ESTABLISHED
    peer.send(ACK, b"head", seq=start)
    assert net.stack.events() == [TcpData(conn, b"head"), TcpData(conn, b"tail"), TcpEof(conn)]
    assert conn.state is State.CLOSE_WAIT and peer.received()[-1].ack == start + 9


@st.composite
def shuffled_segments(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    stream = draw(st.binary(min_size=1, max_size=20_000))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(stream)), max_size=30))) | {len(stream)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append((start, stream[start:cut]))
        start = cut
    extra = draw(st.lists(st.sampled_from(pieces), max_size=10))  # duplicates
    return stream, draw(st.permutations(pieces + extra))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=shuffled_segments(), isn=st.sampled_from([1000, 0xFFFFFFFF - 5000]))
def test_any_arrival_order_reassembles_the_stream(case: tuple[bytes, list[tuple[int, bytes]]],
                                                  isn: int) -> None:
    stream, arrivals = case
    net = make_net()
    peer = Peer(net, isn=isn)
    peer.connect()
    start = peer.seq
    for offset, piece in arrivals:
        peer.send(ACK | PSH, piece, seq=(start + offset) & 0xFFFFFFFF)
    assert data_of(net.stack.events()) == stream
    assert peer.received()[-1].ack == (start + len(stream)) & 0xFFFFFFFF


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), loss=st.sampled_from([0.05, 0.2, 0.4]),
       size=st.integers(1, 60_000))
def test_a_lossy_link_still_delivers_everything(seed: int, loss: float, size: int) -> None:
    """Frames either way are lost at random; the peer keeps only in-order data."""
    rng = random.Random(seed)
    net = make_net(max_retries=30)
    peer = Peer(net)
    conn = peer.connect()
    payload = rng.randbytes(size)
    queued, got = 0, b""
    for _ in range(5000):
        queued += net.stack.tcp_send(conn, payload[queued:])
        arrived = [s for s in peer.received() if rng.random() >= loss]
        if arrived:
            got += peer.read(arrived)
            if rng.random() >= loss:
                peer.send(ACK)
        elif len(got) < size:
            net.to_next_timer()
        else:
            break
    assert got == payload and conn.state is State.ESTABLISHED


# --- closing ----------------------------------------------------------------------------


def test_peer_closes_first(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    peer.send(ACK | FIN, b"bye")
    assert net.stack.events() == [TcpData(conn, b"bye"), TcpEof(conn)]
    assert conn.state is State.CLOSE_WAIT
    assert peer.received()[-1].ack == peer.seq  # FIN acknowledged
    net.stack.tcp_send(conn, b"last words")
    net.stack.tcp_close(conn)
    assert conn.state is State.LAST_ACK
    (seg,) = peer.received()
    assert seg.flags == ACK | PSH | FIN and seg.data == b"last words"  # FIN rides along
    peer.read([seg])
    peer.send(ACK)
    assert net.stack.events() == [TcpClosed(conn, "closed")]
    assert net.stack.connections == [] and net.stack.next_timer_ns() is None


def test_we_close_first_through_time_wait(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_close(conn)
    assert conn.state is State.FIN_WAIT_1
    (fin,) = peer.received()
    assert fin.flags == ACK | FIN
    peer.read([fin])
    peer.send(ACK)
    assert conn.state is State.FIN_WAIT_2
    assert net.stack.tcp_send(conn, b"no") == 0
    peer.send(ACK | PSH, b"still talking")  # a half-closed peer may go on sending
    assert net.stack.events() == [TcpData(conn, b"still talking")]
    peer.send(ACK | FIN)
    assert net.stack.events() == [TcpEof(conn), TcpClosed(conn, "closed")]
    assert conn.state is State.TIME_WAIT
    assert peer.received()[-1].ack == peer.seq
    peer.send(ACK | FIN, seq=(peer.seq - 1) & 0xFFFFFFFF)  # our ACK was lost: FIN again
    assert peer.received()[-1].ack == peer.seq
    assert net.to_next_timer() == SECOND  # the short TIME_WAIT
    assert net.stack.connections == [] and net.stack.events() == []


def test_simultaneous_close(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_close(conn)
    (fin,) = peer.received()
    peer.send(ACK | FIN)  # crosses our FIN
    assert conn.state is State.CLOSING
    peer.read([fin])
    peer.send(ACK)
    assert conn.state is State.TIME_WAIT
    assert net.stack.events() == [TcpEof(conn), TcpClosed(conn, "closed")]


def test_fin_wait_2_gives_up() -> None:
    net = make_net(fin_wait_2_ns=5 * SECOND)
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_close(conn)
    peer.read(peer.received())
    peer.send(ACK)
    assert net.to_next_timer() == 5 * SECOND
    assert net.stack.events() == [TcpClosed(conn, "timeout")]
    assert peer.received()[0].flags & RST


def test_time_wait_is_reopened_by_a_new_syn(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_close(conn)
    peer.read(peer.received())
    peer.send(ACK | FIN)
    net.stack.events()
    peer.received()
    peer.seq += 100_000
    new = peer.connect()
    assert new is not conn and new.state is State.ESTABLISHED


# --- resets -----------------------------------------------------------------------------


def test_reset_at_rcv_nxt_closes(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    peer.send(RST)
    assert net.stack.events() == [TcpClosed(conn, "reset")]
    assert net.stack.connections == [] and peer.received() == []


def test_reset_or_syn_elsewhere_in_the_window_gets_a_challenge_ack(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    peer.send(RST, seq=peer.seq + 10)
    peer.send(SYN, seq=peer.seq + 20)
    assert [(s.flags, s.ack) for s in peer.received()] == [(ACK, peer.seq)] * 2
    peer.send(RST, seq=peer.seq + 100_000)  # outside the window: ignored silently
    assert peer.received() == [] and conn.state is State.ESTABLISHED
    assert net.stack.counters["tcp_challenge_ack"] == 2


def test_abort_sends_reset(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_abort(conn)
    assert peer.received()[0].flags & RST
    assert net.stack.events() == [TcpClosed(conn, "aborted")]


def test_segments_for_no_connection_are_reset(net: Net) -> None:
    peer = Peer(net)
    peer.send(SYN, seq=500, dport=9999)
    (reset,) = peer.received()
    assert (reset.seq, reset.ack, reset.flags) == (0, 501, RST | ACK)
    peer.send(ACK, b"stale", seq=7, ack=12345)
    (reset,) = peer.received()
    assert (reset.seq, reset.flags) == (12345, RST)
    peer.send(RST)
    peer.send(FIN, seq=1)  # to a listening port without ACK: dropped quietly
    assert peer.received() == []
    assert net.stack.counters["tcp_rst_no_connection"] == 1
    assert net.stack.counters["tcp_listen_bad_segment"] == 1


# --- handshake corner cases -------------------------------------------------------------


def test_lost_syn_ack_is_retransmitted_then_given_up() -> None:
    net = make_net(syn_ack_retries=2)
    peer = Peer(net)
    peer.send(SYN)
    (first,) = peer.received()
    peer.send(SYN, seq=peer.seq - 1)  # the peer's SYN retransmission
    assert peer.received() == [first]
    assert net.to_next_timer() == SECOND
    assert peer.received() == [first]
    assert net.to_next_timer() == 2 * SECOND
    assert peer.received() == [first]
    net.to_next_timer()
    assert peer.received()[0].flags & RST
    assert net.stack.connections == [] and net.stack.events() == []  # never accepted


def test_bad_handshake_ack_is_reset(net: Net) -> None:
    peer = Peer(net)
    peer.send(SYN)
    (syn_ack,) = peer.received()
    peer.send(ACK, ack=syn_ack.seq + 7)
    (reset,) = peer.received()
    assert (reset.seq, reset.flags) == (syn_ack.seq + 7, RST)
    assert net.stack.events() == []


def test_half_open_connections_beyond_the_budget_evict_the_oldest() -> None:
    net = make_net(max_half_open=2)
    peers = [Peer(net, sport=port) for port in (1, 2, 3)]
    for peer in peers:
        peer.send(SYN)
        assert [s.flags for s in peer.received()] == [SYN | ACK]
    assert sorted(c.remote_port for c in net.stack.connections) == [2, 3]
    assert net.stack.counters["tcp_half_open_evicted"] == 1
    assert peers[0].received() == [] and net.stack.events() == []  # silently


def test_bad_segments_are_dropped(net: Net) -> None:
    peer = Peer(net)
    conn = peer.connect()
    good = ethernet(ipv4(tcp(peer.sport, PORT, peer.seq, peer.ack, ACK, data=b"x"), 6))
    corrupt = bytearray(good)
    corrupt[-1] ^= 1
    net.stack.receive(bytes(corrupt), 0)
    bad_offset = bytearray(good)
    bad_offset[14 + 20 + 12] = 0x40  # data offset 4 words
    net.stack.receive(ethernet(ipv4(bytes(bad_offset[34:]), 6)), 0)
    net.stack.receive(ethernet(ipv4(good[34:50], 6)), 0)
    assert net.stack.events() == [] and peer.received() == []
    assert {k: net.stack.counters[k] for k in ("tcp_bad_checksum", "tcp_bad_offset",
                                               "tcp_truncated")} == dict.fromkeys(
        ("tcp_bad_checksum", "tcp_bad_offset", "tcp_truncated"), 1)
    assert conn.state is State.ESTABLISHED


# --- several connections and sequence wrap ---------------------------------------------


def test_several_connections_are_independent(net: Net) -> None:
    peers = [Peer(net, sport=41000 + i, isn=i * 7919) for i in range(3)]
    conns = [p.connect() for p in peers]
    for i, peer in enumerate(peers):
        peer.send(ACK | PSH, f"from {i}".encode())
    assert [(e.conn, e.data) for e in net.stack.events()] == [
        (c, f"from {i}".encode()) for i, c in enumerate(conns)]
    for i, conn in enumerate(conns):
        net.stack.tcp_send(conn, f"to {i}".encode())
    for i, peer in enumerate(peers):
        assert peer.read(peer.received()) == f"to {i}".encode()
        peer.send(ACK)
    peers[1].send(RST)
    assert net.stack.events() == [TcpClosed(conns[1], "reset")]
    assert [c.state for c in conns] == [State.ESTABLISHED, State.CLOSED, State.ESTABLISHED]
    peers[2].send(ACK | PSH, b"still here")
    assert net.stack.events() == [TcpData(conns[2], b"still here")]


class _FixedIsn(random.Random):
    def getrandbits(self, k: int) -> int:
        return 0xFFFFFFFF - 1000


def test_our_sequence_numbers_wrap(net: Net) -> None:
    net.stack.tcp._rng = _FixedIsn()
    peer = Peer(net)
    conn = peer.connect()
    payload = bytes(range(256)) * 20
    net.stack.tcp_send(conn, payload)
    got = peer.read(peer.received())
    assert got == payload and peer.ack < 5000  # wrapped past 2**32
    peer.send(ACK)
    assert only_the_idle_timer_runs(net)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=st.lists(st.tuples(
    st.integers(0, 0x3F), st.integers(-70_000, 70_000), st.integers(-3000, 3000),
    st.integers(0, 65535), st.binary(max_size=200)), max_size=12))
def test_random_segments_never_raise(segments: list[tuple[int, int, int, int, bytes]]) -> None:
    """Arbitrary flags, sequence and ack numbers against a live connection."""
    net = make_net()
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_send(conn, bytes(4000))
    for flags, dseq, dack, window, data in segments:
        peer.send(flags, data, seq=(peer.seq + dseq) & 0xFFFFFFFF,
                  ack=(peer.ack + dack) & 0xFFFFFFFF, window=window)
        net.advance(100 * MS)
        net.collect()  # parse() checks every frame sent
        net.stack.events()


def test_echo_service_pushes_back_on_a_slow_reader() -> None:
    """The echo cannot outrun the peer's reading: the receive window closes, then everything
    comes back in order, and the FIN follows the last byte."""
    net = make_net(send_buffer=1500, receive_window=3000)
    echo = EchoService(net.stack)
    peer = Peer(net)
    peer.connect(window=500)
    payload = random.Random(3).randbytes(3000)
    for i in range(0, 3000, 1000):
        peer.send(ACK, payload[i:i + 1000], window=500)
        echo.handle(net.stack.events())
    segments = peer.received()
    assert segments[-1].window == 0  # paused: the peer must stop
    got = peer.read(segments)
    peer.send(ACK | FIN, window=500)
    echo.handle(net.stack.events())
    while not (segments := peer.received()) or not segments[-1].flags & FIN:
        got += peer.read(segments)
        peer.send(ACK, window=500)
        echo.handle(net.stack.events())
    assert got + peer.read(segments) == payload


def test_karns_rule_an_ack_after_a_retransmission_is_not_timed(net: Net) -> None:
    """An ACK for a retransmitted segment gives no RTT sample: the backed-off RTO stays until a
    fresh segment is acknowledged (Karn's rule, RFC 6298 sections 3 and 5)."""
    peer = Peer(net)
    conn = peer.connect()
    net.stack.tcp_send(conn, b"first")
    peer.received()  # lost
    assert net.to_next_timer() == RTO_MIN
    peer.read(peer.received())  # the retransmission arrives...
    net.advance(350 * MS)  # ...and is acknowledged late (timed from the original: 550 ms)
    peer.send(ACK)
    assert only_the_idle_timer_runs(net)
    net.stack.tcp_send(conn, b"second")
    peer.read(peer.received())
    assert net.stack.next_timer_ns() - net.now == 2 * RTO_MIN  # still backed off
    net.advance(10 * MS)
    peer.send(ACK)  # a fresh segment acknowledged: a sample at last
    net.stack.tcp_send(conn, b"third")
    peer.received()
    assert net.stack.next_timer_ns() - net.now == RTO_MIN
