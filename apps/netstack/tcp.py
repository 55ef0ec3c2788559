"""TCP (RFC 9293): passive open, reliable in-order delivery, retransmission, orderly close.

What it does and does not do:
- Passive open only (`listen`); SYN -> SYN-ACK announcing our MSS; the peer's MSS is
  honoured (536 when absent, never below 64). No window scaling, SACK or timestamps are
  offered, so peers use none.
- Receiving: cumulative ACKs; a fixed receive window (`receive_window`, default 65535)
  that the application can close with `pause` (its right edge never moves left). The
  window reopens only at `flush`, once the application had the events of what arrived:
  data beyond the right edge last advertised is refused, however many segments come in
  one batch. Out-of-order segments inside the window are *buffered* (at most
  `max_out_of_order` segments and a window's worth of bytes) and delivered once the gap
  fills, a FIN among them included; each one is answered by an immediate duplicate ACK
  so the peer can fast-retransmit. Like Linux, a bare FIN at RCV.NXT is taken even into a
  zero window, and the ACK field of a segment refused for lack of window is still
  processed (RFC 9293 3.10.7.4), so a peer probing our closed window keeps our sending
  going.
- ACKs for in-order data are coalesced: they go out at `flush` (i.e. `take_frames`), on
  the data segments the application sent meanwhile when there are any.
- Sending: a bounded send buffer (`send_buffer`); segments of at most MSS bytes within the
  peer's advertised window; no Nagle and no congestion control (peers are on-link).
  A zero window is probed with the persist timer (an ACK one below SND.UNA, which makes
  the peer re-announce its window).
- Retransmission: RTO per RFC 6298 (Karn's rule, one timed segment, exponential backoff up
  to `rto_max_ns`); after `max_retries` (`syn_ack_retries` in SYN_RECEIVED) the connection
  is aborted with a RST. Three duplicate ACKs trigger a fast retransmit; partial ACKs after a
  loss retransmit the next hole at once (NewReno-style recovery, without cwnd).
- Closing: FIN both ways through CLOSE_WAIT/LAST_ACK and FIN_WAIT_1/FIN_WAIT_2/CLOSING/
  TIME_WAIT; TIME_WAIT is short (`time_wait_ns`) and a new SYN above RCV.NXT reopens it;
  FIN_WAIT_2 gives up after `fin_wait_2_ns`.
- RST: accepted only at exactly RCV.NXT, otherwise answered with a challenge ACK (RFC 5961),
  as is a SYN on a synchronised connection. Segments for no connection get a RST. An ACK
  field outside SND.UNA - MAX.SND.WND .. SND.NXT gets the segment dropped and an ACK sent
  (RFC 5961 section 5).
- Hostile peers: half-open connections (SYN_RECEIVED) have their own budget
  (`max_half_open`); a SYN beyond it evicts the oldest one silently, so a SYN flood cannot
  keep a legitimate handshake out (it has until `max_half_open` newer SYNs arrive; SYN
  cookies would also work, but cost a keyed hash per SYN, lose the SYN-ACK retransmission
  and encode the MSS coarsely). Synchronised connections are bounded per peer address
  (`max_connections_per_peer`) and overall (`max_connections`): a completed handshake
  beyond a bound evicts the idlest connection of that peer, or of all (RST, TcpClosed
  "evicted"). A connection that makes no progress (no new data either way) for
  `idle_timeout_ns` while not retransmitting is reset (TcpClosed "timeout"), one whose
  peer never reads but answers our window probes included. Memory: a connection holds at
  most `send_buffer` bytes to send plus a window of out-of-order data, and delivers at
  most a window's worth per batch, so the echo service (EchoService) holds at most
  send_buffer + receive_window bytes for it: 128 KiB by default, 8 MiB for one peer
  address's 64 connections, 128 MiB for all 1024.
"""
from __future__ import annotations

import enum
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from . import checksum, ipv4
from .checksum import Buffer
from .events import Event, TcpAccepted, TcpClosed, TcpData, TcpEof, TcpWritable

HEADER = struct.Struct("!HHIIHHHH")
HEADER_LEN = 20
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_FLAG_BITS = 0x3F
_MASK = 0xFFFFFFFF
_HALF = 0x80000000
SECOND_NS = 1_000_000_000
DEFAULT_PEER_MSS = 536
MIN_PEER_MSS = 64
_MSS_OPTION = struct.Struct("!BBH")


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    return ((a - b + _HALF) & _MASK) - _HALF


def peer_mss(options: Buffer) -> int | None:
    """The MSS option's value, or None if absent; malformed options end the scan."""
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2 or i + options[i + 1] > n:
            break
        if kind == 2 and options[i + 1] == 4:
            return int.from_bytes(options[i + 2:i + 4], "big")
        i += options[i + 1]
    return None


class State(enum.Enum):
    """RFC 9293 connection states (LISTEN is a port, CLOSED is no record)."""

    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME_WAIT"
    CLOSED = "CLOSED"


_RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
_SENDING = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.LAST_ACK,
                      State.CLOSING})
_IDLE_TIMED = _RECEIVING | _SENDING  # synchronised states without a timer of their own


class Timer(enum.Enum):
    """What a connection's single timer is running for."""

    RETRANSMIT = 1
    PERSIST = 2
    FIN_WAIT_2 = 3
    TIME_WAIT = 4


@dataclass(frozen=True)
class TcpConfig:
    """Tunables of the TCP layer (times in nanoseconds)."""

    mss: int = 1460
    receive_window: int = 65535
    send_buffer: int = 64 * 1024
    rto_initial_ns: int = 1_000_000_000
    rto_min_ns: int = 200_000_000
    rto_max_ns: int = 60_000_000_000
    max_retries: int = 8
    syn_ack_retries: int = 5
    time_wait_ns: int = 1_000_000_000
    fin_wait_2_ns: int = 60_000_000_000
    max_connections: int = 1024  # synchronised ones (TIME_WAIT included)
    max_connections_per_peer: int = 64
    max_half_open: int = 256
    idle_timeout_ns: int = 300 * SECOND_NS
    max_out_of_order: int = 64


class TcpConn:
    """One connection: the handle the application holds. Public: the four-tuple and state."""

    __slots__ = (
        "local_port", "remote_ip", "remote_port", "state", "_rip", "_key", "_csum_base",
        "iss", "snd_una", "snd_nxt", "snd_wnd", "max_snd_wnd", "snd_wl1", "snd_wl2", "mss",
        "sndbuf", "fin_queued", "fin_seq", "want_writable",
        "rcv_nxt", "rcv_read", "rcv_wnd", "rcv_edge", "paused", "ooo", "ooo_fin", "ack_pending",
        "srtt", "rttvar", "rto", "rtt_seq", "rtt_start", "retries", "recover", "dupacks",
        "persist_ns", "timer_ns", "timer", "progress_ns",
    )

    def __init__(self, rip: bytes, remote_port: int, local_port: int, csum_base: int, *,
                 iss: int, irs: int, peer_window: int, mss: int, config: TcpConfig,
                 now_ns: int) -> None:
        """A connection in SYN_RECEIVED for a peer's SYN (irs: its sequence number)."""
        self.local_port = local_port
        self.remote_ip = ipv4.format_addr(rip)
        self.remote_port = remote_port
        self.state = State.SYN_RECEIVED
        self._rip = rip
        self._key = (rip, remote_port, local_port)
        self._csum_base = csum_base
        self.iss = self.snd_una = self.snd_wl2 = iss
        self.snd_nxt = (iss + 1) & _MASK
        self.snd_wnd = self.max_snd_wnd = peer_window
        self.snd_wl1 = irs
        self.mss = mss
        self.rcv_nxt = self.rcv_read = self.rcv_edge = (irs + 1) & _MASK
        self.rcv_wnd = config.receive_window
        self.rto = self.persist_ns = config.rto_initial_ns
        self.sndbuf = bytearray()
        self.fin_queued = False
        self.fin_seq: int | None = None
        self.want_writable = False
        self.paused = False
        self.ooo: dict[int, bytes] = {}
        self.ooo_fin: int | None = None
        self.ack_pending = False
        self.srtt: int | None = None
        self.rttvar = 0
        self.rtt_seq: int | None = iss  # time the SYN-ACK
        self.rtt_start = now_ns
        self.retries = 0
        self.recover: int | None = None
        self.dupacks = 0
        self.timer_ns: int | None = None
        self.timer: Timer | None = None
        self.progress_ns = now_ns  # when data last went forward either way

    def __repr__(self) -> str:
        return (f"<TcpConn :{self.local_port} <- {self.remote_ip}:{self.remote_port} "
                f"{self.state.value}>")

    def receive_window(self) -> int:
        """Bytes we take from RCV.NXT on: up to the right edge we last advertised."""
        return max(0, seq_diff(self.rcv_edge, self.rcv_nxt))

    def window_to_advertise(self) -> int:
        """The full window less what arrived since the application last had its events (see
        `Tcp.flush`), or when paused what is left of the last one advertised. Either way its
        right edge never moves left, and ACKs sent while segments arrive do not move it on."""
        if self.paused:
            return self.receive_window()
        return max(0, self.rcv_wnd - seq_diff(self.rcv_nxt, self.rcv_read))

    def set_timer(self, kind: Timer | None, deadline_ns: int | None = None) -> None:
        self.timer, self.timer_ns = kind, deadline_ns

    def idle_deadline(self, idle_timeout_ns: int) -> int | None:
        """When the idle timeout resets the connection: synchronised and not retransmitting
        (`max_retries` bounds that), the time since it last made progress counts."""
        if self.state in _IDLE_TIMED and self.timer is not Timer.RETRANSMIT:
            return self.progress_ns + idle_timeout_ns
        return None


class Tcp:
    """The TCP layer of one host address; `NetStack` owns it and drives it."""

    def __init__(self, ip: bytes, ip_send: Callable[[bytes, int, tuple[bytes, ...]], None],
                 events: list[Event], counters: Counter[str], config: TcpConfig,
                 rng: random.Random) -> None:
        self.ip = ip
        self.conns: dict[tuple[bytes, int, int], TcpConn] = {}
        self.listening: set[int] = set()
        self._ip_send = ip_send
        self._events = events
        self._counters = counters
        self._config = config
        self._rng = rng
        self._dirty: dict[TcpConn, None] = {}
        self._mss_option = _MSS_OPTION.pack(2, 4, config.mss)
        self._half_open: dict[tuple[bytes, int, int], TcpConn] = {}  # oldest first
        self._per_peer: Counter[bytes] = Counter()  # synchronised connections by address

    # --- application calls -------------------------------------------------------------

    def send(self, c: TcpConn, data: bytes | bytearray | memoryview) -> int:
        """Queue data; returns how many bytes fitted (0 once closed or closing)."""
        if c.fin_queued or (c.state is not State.ESTABLISHED and c.state is not State.CLOSE_WAIT):
            return 0
        n = min(len(data), self._config.send_buffer - len(c.sndbuf))
        if n:
            c.sndbuf += memoryview(data)[:n]
            self._dirty[c] = None
        if n < len(data):
            c.want_writable = True
        return n

    def close(self, c: TcpConn) -> None:
        """Send FIN after the queued data (no-op unless ESTABLISHED or CLOSE_WAIT)."""
        if c.state is State.ESTABLISHED:
            c.state = State.FIN_WAIT_1
        elif c.state is State.CLOSE_WAIT:
            c.state = State.LAST_ACK
        else:
            return
        c.fin_queued = True
        self._dirty[c] = None

    def abort(self, c: TcpConn) -> None:
        """Reset the connection now (no-op once the application was told it closed)."""
        if c.state is not State.CLOSED and c.state is not State.TIME_WAIT:
            self._abort(c, "aborted")

    def pause(self, c: TcpConn, paused: bool) -> None:
        """Stop (True) or resume (False) opening the receive window."""
        if c.paused and not paused:
            c.ack_pending = True  # a window update
            self._dirty[c] = None
        c.paused = paused

    # --- driven by NetStack --------------------------------------------------------------

    def flush(self, now_ns: int) -> None:
        """Emit the segments that application calls and received data made due.

        The application has had the events of the data received so far (and paused what it
        cannot take), so the receive window reopens here.
        """
        dirty, self._dirty = self._dirty, {}
        for c in dirty:
            if c.state is not State.CLOSED:
                c.rcv_read = c.rcv_nxt
                self._output(c, now_ns)

    def next_timer_ns(self) -> int | None:
        """The earliest connection timer or idle deadline, or None."""
        idle = self._config.idle_timeout_ns
        deadlines = [c.timer_ns for c in self.conns.values()]
        deadlines += [c.idle_deadline(idle) for c in self.conns.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def on_timer(self, now_ns: int) -> None:
        """Run every connection timer that is due, and reset connections idle too long."""
        idle = self._config.idle_timeout_ns
        for c in list(self.conns.values()):
            if c.timer_ns is not None and c.timer_ns <= now_ns:
                self._expire(c, now_ns)
            deadline = c.idle_deadline(idle)
            if deadline is not None and deadline <= now_ns:
                self._counters["tcp_idle_timeout"] += 1
                self._abort(c, "timeout")

    def receive(self, frame: Buffer, o: int, end: int, sip: bytes, dip: bytes,
                now_ns: int) -> None:
        """Handle the TCP segment frame[o:end] of an IPv4 packet sip -> dip."""
        counters = self._counters
        if end - o < HEADER_LEN:
            counters["tcp_truncated"] += 1
            return
        sport, dport, seq, ack, off_flags, wnd, _, _ = HEADER.unpack_from(frame, o)
        hlen = (off_flags >> 12) << 2
        if hlen < HEADER_LEN or o + hlen > end:
            counters["tcp_bad_offset"] += 1
        elif dip != self.ip:
            counters["tcp_not_unicast"] += 1
        elif not sport:
            counters["tcp_source_port_zero"] += 1
        elif not checksum.valid(frame[o:end], checksum.pseudo(sip, dip, ipv4.PROTO_TCP, end - o)):
            counters["tcp_bad_checksum"] += 1
        else:
            flags = off_flags & _FLAG_BITS
            c = self.conns.get((sip, sport, dport))
            if c is not None and c.state is State.TIME_WAIT and flags & SYN \
                    and seq_diff(seq, c.rcv_nxt) > 0:
                self._remove(c)  # RFC 6191: a new incarnation may reuse the four-tuple
                c = None
            if c is None:
                self._no_connection(frame, o, hlen, end, sip, sport, dport, seq, ack, flags, wnd,
                                    now_ns)
            else:
                self._arrive(c, seq, ack, flags, wnd, frame[o + hlen:end], now_ns)

    # --- segment arrival -----------------------------------------------------------------

    def _no_connection(self, frame: Buffer, o: int, hlen: int, end: int, sip: bytes,
                       sport: int, dport: int, seq: int, ack: int, flags: int, wnd: int,
                       now_ns: int) -> None:
        counters = self._counters
        if flags & RST:
            counters["tcp_rst_no_connection"] += 1
        elif dport in self.listening and flags & (SYN | ACK | FIN) == SYN:
            if len(self._half_open) >= self._config.max_half_open:
                counters["tcp_half_open_evicted"] += 1  # most likely a flood's: no RST
                self._remove(next(iter(self._half_open.values())))
            self._open(sip, sport, dport, seq, wnd, peer_mss(frame[o + HEADER_LEN:o + hlen]),
                       now_ns)
        elif dport in self.listening and not flags & ACK:
            counters["tcp_listen_bad_segment"] += 1
        else:
            counters["tcp_no_connection"] += 1
            base = self._csum_base(sip, dport, sport)
            if flags & ACK:
                self._send(sip, base, dport, sport, ack, 0, RST, 0)
            else:
                seg_len = end - o - hlen + (flags & SYN and 1) + (flags & FIN and 1)
                self._send(sip, base, dport, sport, 0, (seq + seg_len) & _MASK, RST | ACK, 0)

    def _open(self, sip: bytes, sport: int, dport: int, seq: int, wnd: int, mss: int | None,
              now_ns: int) -> None:
        cfg = self._config
        c = TcpConn(sip, sport, dport, self._csum_base(sip, dport, sport),
                    iss=self._rng.getrandbits(32), irs=seq, peer_window=wnd,
                    mss=min(cfg.mss, max(MIN_PEER_MSS, DEFAULT_PEER_MSS if mss is None else mss)),
                    config=cfg, now_ns=now_ns)
        self.conns[c._key] = self._half_open[c._key] = c
        self._send_syn_ack(c)
        c.set_timer(Timer.RETRANSMIT, now_ns + c.rto)

    def _arrive(self, c: TcpConn, seq: int, ack: int, flags: int, wnd: int,
                data: Buffer, now_ns: int) -> None:
        counters = self._counters
        if c.state is State.SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seq == \
                (c.rcv_nxt - 1) & _MASK:
            counters["tcp_duplicate_syn"] += 1
            self._send_syn_ack(c)
            return
        seg_len = len(data) + (flags & SYN and 1) + (flags & FIN and 1)
        window = c.receive_window()
        start = seq_diff(seq, c.rcv_nxt)
        if seg_len == 0:
            acceptable = start == 0 if window == 0 else 0 <= start < window
        elif window == 0:  # like Linux, take a bare FIN at RCV.NXT even into a zero window
            acceptable = start == 0 and flags & (SYN | FIN) == FIN and not data
        else:
            acceptable = 0 <= start < window or 0 <= start + seg_len - 1 < window
        if not acceptable:
            counters["tcp_unacceptable"] += 1
            if not flags & RST:
                self._send_ack(c)
                # RFC 9293 3.10.7.4: still take valid ACKs (e.g. while our window is zero).
                if flags & (ACK | SYN) == ACK and c.state is not State.SYN_RECEIVED \
                        and self._ack_in_range(c, ack):
                    self._process_ack(c, seq, ack, wnd, False, now_ns)
            return
        if flags & RST:
            if start == 0:
                counters["tcp_reset"] += 1
                self._abort(c, "reset", send_rst=False)
            else:
                counters["tcp_challenge_ack"] += 1
                self._send_ack(c)
            return
        if flags & SYN:
            counters["tcp_challenge_ack"] += 1
            self._send_ack(c)
            return
        if not flags & ACK:
            counters["tcp_no_ack"] += 1
            return
        if c.state is State.SYN_RECEIVED:
            if not 0 < seq_diff(ack, c.snd_una) <= seq_diff(c.snd_nxt, c.snd_una):
                counters["tcp_bad_handshake_ack"] += 1
                self._send(c._rip, c._csum_base, c.local_port, c.remote_port, ack, 0, RST, 0)
                return
            c.snd_una, c.retries = ack, 0  # our SYN is acknowledged
            c.set_timer(None)
            if c.rtt_seq is not None:
                self._rtt_sample(c, now_ns - c.rtt_start)
            self._establish(c, now_ns)
        if self._process_ack(c, seq, ack, wnd, seg_len == 0, now_ns):
            self._receive_text(c, seq, data, bool(flags & FIN), now_ns)

    def _ack_in_range(self, c: TcpConn, ack: int) -> bool:
        """RFC 5961 section 5.2: SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT (counted if not)."""
        if seq_diff(ack, c.snd_nxt) > 0:
            self._counters["tcp_ack_unsent"] += 1
        elif seq_diff(c.snd_una, ack) > c.max_snd_wnd:
            self._counters["tcp_ack_too_old"] += 1
        else:
            return True
        return False

    def _process_ack(self, c: TcpConn, seq: int, ack: int, wnd: int, pure: bool,
                     now_ns: int) -> bool:
        """The ACK and window fields; False when the segment needs no further processing."""
        cfg = self._config
        if not self._ack_in_range(c, ack):
            self._send_ack(c)
            return False
        if c.timer is Timer.PERSIST:
            c.retries = 0
        advanced = seq_diff(ack, c.snd_una)
        if advanced > 0:
            acked = advanced
            if c.fin_seq is not None and seq_diff(ack, c.fin_seq) > 0:
                acked -= 1  # our FIN
            del c.sndbuf[:acked]
            c.snd_una, c.progress_ns = ack, now_ns
            c.retries = c.dupacks = 0
            if c.rtt_seq is not None and seq_diff(ack, c.rtt_seq) > 0:
                self._rtt_sample(c, now_ns - c.rtt_start)
            if c.recover is not None:
                if seq_diff(ack, c.recover) < 0:
                    self._retransmit(c)  # partial ACK: the next hole is lost too
                else:
                    c.recover = None
            if ack == c.snd_nxt:
                c.set_timer(None)
            else:
                c.set_timer(Timer.RETRANSMIT, now_ns + c.rto)
            if c.want_writable and len(c.sndbuf) < cfg.send_buffer:
                c.want_writable = False
                self._events.append(TcpWritable(c))
            self._dirty[c] = None
        elif advanced == 0 and pure and wnd == c.snd_wnd and ack != c.snd_nxt:
            c.dupacks += 1
            if c.dupacks == 3:
                self._counters["tcp_fast_retransmit"] += 1
                c.recover = c.snd_nxt
                self._retransmit(c)
        if seq_diff(seq, c.snd_wl1) > 0 or (seq == c.snd_wl1 and seq_diff(ack, c.snd_wl2) >= 0):
            if wnd != c.snd_wnd:
                c.snd_wnd = wnd
                c.max_snd_wnd = max(c.max_snd_wnd, wnd)
                self._dirty[c] = None
                if wnd and c.timer is Timer.PERSIST:
                    c.set_timer(None)
            c.snd_wl1, c.snd_wl2 = seq, ack
        if c.fin_seq is not None and ack == c.snd_nxt:
            if c.state is State.FIN_WAIT_1:
                c.state = State.FIN_WAIT_2
                c.set_timer(Timer.FIN_WAIT_2, now_ns + cfg.fin_wait_2_ns)
            elif c.state is State.CLOSING:
                self._enter_time_wait(c, now_ns)
            elif c.state is State.LAST_ACK:
                self._remove(c)
                self._events.append(TcpClosed(c, "closed"))
                return False
        return True

    def _receive_text(self, c: TcpConn, seq: int, data: Buffer, fin: bool,
                      now_ns: int) -> None:
        """Data and FIN of an acceptable segment whose ACK was processed."""
        if c.state not in _RECEIVING:
            return  # the peer's FIN came before: anything more is a duplicate
        start = seq_diff(seq, c.rcv_nxt)
        stop = start + len(data)  # where the FIN sits, if any
        window = c.receive_window()
        if stop > window:
            data, fin, stop = data[:window - start], False, window
        if start < 0:
            data, start = data[-start:], 0
        if start > 0:
            self._hold_out_of_order(c, start, data, stop if fin else None)
            self._send_ack(c)
            return
        if data:
            self._deliver(c, bytes(data))
            self._deliver_held(c)
        elif not fin:
            return  # a pure ACK: nothing to acknowledge
        c.progress_ns = now_ns
        if fin or c.ooo_fin == c.rcv_nxt:
            self._receive_fin(c, now_ns)
        c.ack_pending = True
        self._dirty[c] = None

    def _hold_out_of_order(self, c: TcpConn, start: int, data: Buffer,
                           fin_at: int | None) -> None:
        seq = (c.rcv_nxt + start) & _MASK
        if fin_at is not None:
            c.ooo_fin = (c.rcv_nxt + fin_at) & _MASK
        if not data or len(c.ooo.get(seq, b"")) >= len(data):
            return
        held = sum(map(len, c.ooo.values())) - len(c.ooo.get(seq, b""))
        if (len(c.ooo) >= self._config.max_out_of_order and seq not in c.ooo) \
                or held + len(data) > c.receive_window():
            self._counters["tcp_out_of_order_full"] += 1
        else:
            c.ooo[seq] = bytes(data)

    def _deliver(self, c: TcpConn, data: bytes) -> None:
        c.rcv_nxt = (c.rcv_nxt + len(data)) & _MASK
        self._events.append(TcpData(c, data))

    def _deliver_held(self, c: TcpConn) -> None:
        """Deliver held segments that the advancing RCV.NXT reached."""
        progressed = True
        while progressed and c.ooo:
            progressed = False
            for seq in list(c.ooo):
                behind = -seq_diff(seq, c.rcv_nxt)
                if behind >= 0:
                    held = c.ooo.pop(seq)
                    if len(held) > behind:
                        self._deliver(c, held[behind:])
                    progressed = True

    def _receive_fin(self, c: TcpConn, now_ns: int) -> None:
        c.rcv_nxt = (c.rcv_nxt + 1) & _MASK
        c.ooo.clear()
        c.ooo_fin = None
        self._events.append(TcpEof(c))
        if c.state is State.ESTABLISHED:
            c.state = State.CLOSE_WAIT
        elif c.state is State.FIN_WAIT_1:
            c.state = State.CLOSING
        else:
            self._enter_time_wait(c, now_ns)

    # --- admission -----------------------------------------------------------------------

    def _establish(self, c: TcpConn, now_ns: int) -> None:
        """The handshake of c completed: make room for it among the synchronised connections."""
        cfg = self._config
        if self._per_peer[c._rip] >= cfg.max_connections_per_peer:
            self._evict(self._idlest(c._rip), "tcp_evicted_peer_limit")
        elif len(self.conns) - len(self._half_open) >= cfg.max_connections:
            self._evict(self._idlest(None), "tcp_evicted_connection_limit")
        del self._half_open[c._key]
        self._per_peer[c._rip] += 1
        c.state, c.progress_ns = State.ESTABLISHED, now_ns
        self._events.append(TcpAccepted(c))

    def _idlest(self, peer: bytes | None) -> TcpConn:
        """The synchronised connection (of peer, unless None) that progressed longest ago."""
        return min((c for c in self.conns.values() if c.state is not State.SYN_RECEIVED
                    and (peer is None or c._rip == peer)), key=lambda c: c.progress_ns)

    def _evict(self, c: TcpConn, counter: str) -> None:
        self._counters[counter] += 1
        if c.state is State.TIME_WAIT:
            self._remove(c)  # the application already saw it close
        else:
            self._abort(c, "evicted")

    # --- output --------------------------------------------------------------------------

    def _output(self, c: TcpConn, now_ns: int) -> None:
        """Send what the window allows (data, then FIN), else a pending ACK."""
        sent = False
        if c.state in _SENDING and c.fin_seq is None:
            buf = c.sndbuf
            offset = seq_diff(c.snd_nxt, c.snd_una)
            limit = min(len(buf), c.snd_wnd)
            if c.rtt_seq is None and offset < limit:
                c.rtt_seq, c.rtt_start = c.snd_nxt, now_ns
            while offset < limit:
                n = min(c.mss, limit - offset)
                last = offset + n == len(buf)
                fin = last and c.fin_queued
                self._send_conn(c, c.snd_nxt, ACK | (PSH if last else 0) | (FIN if fin else 0),
                                bytes(buf[offset:offset + n]))
                if fin:
                    c.fin_seq = (c.snd_nxt + n) & _MASK
                c.snd_nxt = (c.snd_nxt + n + fin) & _MASK
                offset += n
                sent = True
            if c.fin_queued and c.fin_seq is None and offset == len(buf):
                c.fin_seq = c.snd_nxt
                self._send_conn(c, c.snd_nxt, ACK | FIN)
                c.snd_nxt = (c.snd_nxt + 1) & _MASK
                sent = True
            if sent and c.timer is not Timer.RETRANSMIT:
                c.set_timer(Timer.RETRANSMIT, now_ns + c.rto)
            elif offset < len(buf) and c.snd_nxt == c.snd_una and c.timer is None:
                c.persist_ns = c.rto
                c.set_timer(Timer.PERSIST, now_ns + c.persist_ns)
        if c.ack_pending:
            self._send_ack(c)

    def _retransmit(self, c: TcpConn) -> None:
        """Resend the first unacknowledged segment."""
        c.rtt_seq = None  # Karn: never time a retransmitted segment
        if c.state is State.SYN_RECEIVED:
            self._send_syn_ack(c)
            return
        in_flight = seq_diff(c.snd_nxt, c.snd_una) - (c.fin_seq is not None)
        n = min(c.mss, in_flight)
        fin = c.fin_seq is not None and n == in_flight
        if n > 0 or fin:
            self._counters["tcp_retransmitted"] += 1
            self._send_conn(c, c.snd_una, ACK | (FIN if fin else 0), bytes(c.sndbuf[:n]))

    def _send_syn_ack(self, c: TcpConn) -> None:
        self._send_conn(c, c.iss, SYN | ACK, b"", self._mss_option)

    def _send_ack(self, c: TcpConn) -> None:
        self._send_conn(c, c.snd_nxt, ACK)

    def _send_conn(self, c: TcpConn, seq: int, flags: int, data: bytes = b"",
                   options: bytes = b"") -> None:
        wnd = min(c.window_to_advertise(), 0xFFFF)
        c.rcv_edge = (c.rcv_nxt + wnd) & _MASK
        c.ack_pending = False
        self._send(c._rip, c._csum_base, c.local_port, c.remote_port, seq, c.rcv_nxt, flags,
                   wnd, data, options)

    def _send(self, rip: bytes, base: int, lport: int, rport: int, seq: int, ack: int,
              flags: int, wnd: int, data: bytes = b"", options: bytes = b"") -> None:
        hlen = HEADER_LEN + len(options)
        off_flags = (hlen << 10) | flags
        total = base + hlen + len(data) + seq + ack + off_flags + wnd
        if options:
            total += checksum.residue(options)
        if data:
            total += checksum.residue(data)
        header = HEADER.pack(lport, rport, seq, ack, off_flags, wnd, checksum.field(total), 0)
        self._ip_send(rip, ipv4.PROTO_TCP, (header + options, data))

    def _csum_base(self, rip: bytes, lport: int, rport: int) -> int:
        """Pseudo-header and port residue of segments from lport to rip:rport (length apart)."""
        return checksum.pseudo(self.ip, rip, ipv4.PROTO_TCP, 0) + lport + rport

    # --- timers and teardown -------------------------------------------------------------

    def _expire(self, c: TcpConn, now_ns: int) -> None:
        cfg = self._config
        if c.timer is Timer.RETRANSMIT:
            limit = cfg.syn_ack_retries if c.state is State.SYN_RECEIVED else cfg.max_retries
            if c.retries >= limit:
                self._counters["tcp_timeout"] += 1
                self._abort(c, "timeout")
                return
            c.retries += 1
            c.rto = min(c.rto * 2, cfg.rto_max_ns)
            c.recover, c.dupacks = c.snd_nxt, 0
            self._retransmit(c)
            c.set_timer(Timer.RETRANSMIT, now_ns + c.rto)
        elif c.timer is Timer.PERSIST:
            if c.retries >= cfg.max_retries:
                self._counters["tcp_timeout"] += 1
                self._abort(c, "timeout")
                return
            c.retries += 1
            self._send_conn(c, (c.snd_una - 1) & _MASK, ACK)
            c.persist_ns = min(c.persist_ns * 2, cfg.rto_max_ns)
            c.set_timer(Timer.PERSIST, now_ns + c.persist_ns)
        elif c.timer is Timer.FIN_WAIT_2:
            self._counters["tcp_fin_wait_2_timeout"] += 1
            self._abort(c, "timeout")
        else:
            self._remove(c)

    def _rtt_sample(self, c: TcpConn, rtt: int) -> None:
        """RFC 6298 section 2 smoothing; clears the timed segment."""
        cfg = self._config
        if c.srtt is None:
            c.srtt, c.rttvar = rtt, rtt // 2
        else:
            c.rttvar = (3 * c.rttvar + abs(c.srtt - rtt)) // 4
            c.srtt = (7 * c.srtt + rtt) // 8
        c.rto = min(max(c.srtt + 4 * c.rttvar, cfg.rto_min_ns), cfg.rto_max_ns)
        c.rtt_seq = None

    def _enter_time_wait(self, c: TcpConn, now_ns: int) -> None:
        c.state = State.TIME_WAIT
        c.sndbuf.clear()
        c.set_timer(Timer.TIME_WAIT, now_ns + self._config.time_wait_ns)
        self._events.append(TcpClosed(c, "closed"))

    def _abort(self, c: TcpConn, reason: str, send_rst: bool = True) -> None:
        """Drop the connection, telling the peer (RST) and the application (if it knew it)."""
        if send_rst:
            self._send(c._rip, c._csum_base, c.local_port, c.remote_port, c.snd_nxt, c.rcv_nxt,
                       RST | ACK, 0)
        known = c.state is not State.SYN_RECEIVED
        self._remove(c)
        if known:
            self._events.append(TcpClosed(c, reason))

    def _remove(self, c: TcpConn) -> None:
        if c.state is State.SYN_RECEIVED:
            del self._half_open[c._key]
        else:
            self._per_peer[c._rip] -= 1
            if not self._per_peer[c._rip]:
                del self._per_peer[c._rip]
        c.state = State.CLOSED
        c.set_timer(None)
        del self.conns[c._key]
        self._dirty.pop(c, None)
