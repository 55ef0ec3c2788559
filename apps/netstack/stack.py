"""NetStack: one host (one MAC, one IPv4 address) as a sans-I/O state machine."""
from __future__ import annotations

import dataclasses
import random
import struct
from collections import Counter
from dataclasses import dataclass, field

from . import checksum, ethernet, icmp, ipv4, udp
from .arp import Arp, ArpConfig
from .checksum import Buffer
from .events import Event, UdpDatagram
from .tcp import HEADER_LEN as _TCP_HEADER_LEN
from .tcp import Tcp, TcpConfig, TcpConn

# Reply headers, Ethernet to end of the UDP/ICMP header, each packed in one call.
_UDP_REPLY_HEADER = struct.Struct(ipv4.ETH_IP.format + udp.HEADER.format[1:])
_ICMP_REPLY_HEADER = struct.Struct(ipv4.ETH_IP.format + icmp.HEADER.format[1:])
_MOD = checksum.MOD
_SRC_ADDR_OFFSET = ipv4.ETH_IP_LEN - 8
_NOT_HOST = ipv4.NOT_HOST_FIRST_OCTETS
_REFUSED_FRAGMENT_BITS = ipv4.FLAG_RESERVED | ipv4.FRAGMENT_MASK
MIN_MTU = 68  # RFC 791: every host must take datagrams of 68 bytes unfragmented
_TCP_IP_HEADERS = ipv4.MIN_HEADER_LEN + _TCP_HEADER_LEN  # what a segment adds to its MSS


def _checked_port(port: int) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"bad port number {port}")
    return port


def _udp_echo_refusal(broadcast: bool, src_port: int, dst_port: int, size: int, max_size: int) -> str | None:
    """Why a UDP echo of size bytes must not be sent (the counter to bump), or None.

    Not to a datagram sent to a broadcast address (every host on the link would answer), nor to
    source port 0 (RFC 768: the sender wants no answer), nor from the echo port itself (another
    echo service: the two would echo each other forever, e.g. after one forged datagram), nor
    beyond the MTU (no fragmentation).
    """
    if broadcast:
        return "udp_broadcast_echo"
    if src_port == dst_port:
        return "udp_echo_loop"
    if not src_port:
        return "udp_echo_to_port_zero"
    if size > max_size:
        return "udp_echo_too_big"
    return None


@dataclass(frozen=True)
class Config:
    """Tunables of a NetStack.

    `mtu` bounds every frame we send (MTU + 14 bytes at most: no fragmentation): `udp_send`
    refuses larger datagrams, echoes that would be larger are dropped and counted, and the
    TCP MSS is cut to fit. `prefix_len` is the on-link subnet's, for its directed broadcast
    address (treated as a broadcast destination and refused as a source).
    """

    mtu: int = 1500
    prefix_len: int = 24
    arp: ArpConfig = field(default_factory=ArpConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)


def _tcp_config_for_mtu(config: Config) -> TcpConfig:
    """config.tcp with its MSS cut so that a full segment fits the MTU."""
    mss = min(config.tcp.mss, config.mtu - _TCP_IP_HEADERS)
    return config.tcp if mss == config.tcp.mss else dataclasses.replace(config.tcp, mss=mss)


class NetStack:
    """Ethernet + ARP + IPv4 + ICMP echo + UDP + TCP for one host; see the package docstring."""

    def __init__(self, mac: bytes | str, ip: str, *, config: Config | None = None,
                 seed: int | None = None) -> None:
        self.config = config or Config()
        if self.config.mtu < MIN_MTU:
            raise ValueError(f"MTU {self.config.mtu} is below the minimum of {MIN_MTU}")
        self.mac = ethernet.parse_mac(mac) if isinstance(mac, str) else bytes(mac)
        if len(self.mac) != 6 or not ethernet.is_unicast(self.mac):
            raise ValueError(f"not a unicast MAC address: {mac!r}")
        self.ip = ipv4.parse_addr(ip)
        self._subnet_broadcast = ipv4.subnet_broadcast(self.ip, self.config.prefix_len)
        if not ipv4.is_host(self.ip) or self.ip == self._subnet_broadcast:
            raise ValueError(f"not a host address: {ip!r}")
        self._broadcasts = frozenset((ipv4.BROADCAST, self._subnet_broadcast))
        self._max_ip_payload = self.config.mtu - ipv4.MIN_HEADER_LEN
        self._max_udp_data = self._max_ip_payload - udp.HEADER_LEN
        self.counters: Counter[str] = Counter()
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._now = 0
        self._ident = 0
        self._udp_ports: dict[int, bool] = {}  # port -> echo
        self.arp = Arp(self.mac, self.ip, self._out, self.counters, self.config.arp,
                       self._broadcasts)
        self.tcp = Tcp(self.ip, self._ip_send, self._events, self.counters,
                       _tcp_config_for_mtu(self.config), random.Random(seed))

    # --- input ---------------------------------------------------------------------------

    def receive(self, frame: Buffer, now_ns: int) -> None:
        """Take one Ethernet frame (no FCS). Never raises on bad input: drops are counted.

        Nothing keeps a reference to frame afterwards: its buffer may be reused at once.

        The IPv4/UDP/ICMP path is written out in one function on purpose: it is the echo
        benchmark's hot path, and each Python call or checksum helper it avoids is ~5% of it.
        """
        self._now = now_ns
        counters = self.counters
        n = len(frame)
        if n < ipv4.ETH_IP_LEN:
            self._short_frame(frame, n)
            return
        dst, src_mac, ethertype, vihl, tos, total, ident, frag, ttl, proto, hck, sip, dip = \
            ipv4.ETH_IP.unpack_from(frame)
        if dst != self.mac and dst != ethernet.BROADCAST:
            counters["eth_not_for_us"] += 1
            return
        if src_mac[0] & 1 or src_mac == self.mac:  # echo replies go to src_mac: not a group
            counters["eth_bad_source"] += 1
            return
        if ethertype != ethernet.TYPE_IPV4:
            self._non_ipv4(frame, ethertype)
            return
        hlen = (vihl & 15) << 2
        o = ethernet.HEADER_LEN + hlen
        end = ethernet.HEADER_LEN + total
        if vihl >> 4 != 4:
            counters["ip_bad_version"] += 1
        elif hlen < ipv4.MIN_HEADER_LEN:
            counters["ip_bad_ihl"] += 1
        elif total < hlen or end > n:
            counters["ip_bad_length"] += 1
        elif int.from_bytes(frame[ethernet.HEADER_LEN:o], "little") % _MOD:
            counters["ip_bad_checksum"] += 1
        elif frag & _REFUSED_FRAGMENT_BITS:  # so a reply may copy frag: DF at most
            counters["ip_reserved_flag" if frag & ipv4.FLAG_RESERVED else "ip_fragment"] += 1
        elif dip != self.ip and dip not in self._broadcasts:
            counters["ip_not_for_us"] += 1
        elif dip == self.ip and dst == ethernet.BROADCAST:
            counters["ip_unicast_in_link_broadcast"] += 1  # RFC 1122 3.3.6: silently discarded
        elif sip[0] in _NOT_HOST or sip == self.ip or sip == self._subnet_broadcast:
            counters["ip_bad_source"] += 1  # RFC 1122 3.2.1.3: nobody to answer there
        elif proto == ipv4.PROTO_UDP:
            if end - o < udp.HEADER_LEN:
                counters["udp_truncated"] += 1
                return
            sport, dport, ulen, uck = udp.HEADER.unpack_from(frame, o)
            if ulen < udp.HEADER_LEN or o + ulen > end:
                counters["udp_bad_length"] += 1
                return
            if uck:
                if o == ipv4.ETH_IP_LEN:  # the addresses sit right before the UDP header
                    r = int.from_bytes(frame[_SRC_ADDR_OFFSET:o + ulen], "little") % _MOD
                    r = ((r >> 8) | ((r & 0xFF) << 8)) + ipv4.PROTO_UDP + ulen
                else:
                    r = checksum.residue(frame[o:o + ulen]) \
                        + checksum.pseudo(sip, dip, ipv4.PROTO_UDP, ulen)
                if r % _MOD:
                    counters["udp_bad_checksum"] += 1
                    return
            echo = self._udp_ports.get(dport)
            if echo is None:
                counters["udp_no_listener"] += 1
            elif not echo:
                self._events.append(UdpDatagram(dport, ipv4.format_addr(sip), sport,
                                                bytes(frame[o + udp.HEADER_LEN:o + ulen]),
                                                dip != self.ip))
            elif dip != self.ip or not sport or sport == dport or ulen > self._max_ip_payload:
                counters[_udp_echo_refusal(dip != self.ip, sport, dport, ulen - udp.HEADER_LEN,
                                           self._max_udp_data)] += 1
            else:
                # Reply header checksums derived from the verified request's (residue 0):
                # new TTL and length, no options; addresses and ports swapped change neither.
                change = ((0x45 - vihl + ipv4.TTL - ttl) << 8) + ipv4.MIN_HEADER_LEN + ulen \
                    - total - hck
                if o > ipv4.ETH_IP_LEN:
                    change -= checksum.residue(frame[ipv4.ETH_IP_LEN:o])
                self._out.append(_UDP_REPLY_HEADER.pack(
                    src_mac, self.mac, ethernet.TYPE_IPV4, 0x45, tos, ipv4.MIN_HEADER_LEN + ulen,
                    ident, frag, ipv4.TTL, ipv4.PROTO_UDP, _MOD - change % _MOD, self.ip, sip,
                    dport, sport, ulen, uck,
                ) + frame[o + udp.HEADER_LEN:o + ulen])
        elif proto == ipv4.PROTO_TCP:
            self.tcp.receive(frame, o, end, sip, dip, now_ns)
        elif proto == ipv4.PROTO_ICMP:
            if end - o < icmp.HEADER_LEN:
                counters["icmp_truncated"] += 1
                return
            kind, code, ick = icmp.HEADER.unpack_from(frame, o)
            if int.from_bytes(frame[o:end], "little") % _MOD:
                counters["icmp_bad_checksum"] += 1
            elif kind != icmp.TYPE_ECHO_REQUEST:
                counters["icmp_unhandled_type"] += 1
            elif dip != self.ip:
                counters["icmp_broadcast_echo"] += 1  # RFC 1122 3.2.2.6 lets us ignore it
            elif end - o > self._max_ip_payload:
                counters["icmp_echo_too_big"] += 1
            else:
                size = end - o
                change = ((0x45 - vihl + ipv4.TTL - ttl) << 8) + ipv4.MIN_HEADER_LEN + size \
                    - total - hck
                if o > ipv4.ETH_IP_LEN:
                    change -= checksum.residue(frame[ipv4.ETH_IP_LEN:o])
                self._out.append(_ICMP_REPLY_HEADER.pack(
                    src_mac, self.mac, ethernet.TYPE_IPV4, 0x45, tos, ipv4.MIN_HEADER_LEN + size,
                    ident, frag, ipv4.TTL, ipv4.PROTO_ICMP, _MOD - change % _MOD, self.ip, sip,
                    icmp.TYPE_ECHO_REPLY, code, icmp.echo_reply_checksum(ick),
                ) + frame[o + icmp.HEADER_LEN:end])
        else:
            counters["ip_unknown_protocol"] += 1

    def _short_frame(self, frame: Buffer, n: int) -> None:
        """A frame too short for Ethernet + IPv4 headers."""
        if n < ethernet.HEADER_LEN:
            self.counters["eth_truncated"] += 1
            return
        dst, _, ethertype = ethernet.HEADER.unpack_from(frame)
        if dst != self.mac and dst != ethernet.BROADCAST:
            self.counters["eth_not_for_us"] += 1
        elif ethertype == ethernet.TYPE_IPV4:
            self.counters["ip_truncated"] += 1
        else:
            self._non_ipv4(frame, ethertype)

    def _non_ipv4(self, frame: Buffer, ethertype: int) -> None:
        if ethertype == ethernet.TYPE_ARP:
            self.arp.receive(frame, self._now)
        else:
            self.counters["eth_unknown_type"] += 1

    # --- output --------------------------------------------------------------------------

    def take_frames(self) -> list[bytes]:
        """The Ethernet frames to transmit, in order (TCP output is generated here)."""
        self.tcp.flush(self._now)
        frames = self._out[:]
        self._out.clear()
        return frames

    def events(self) -> list[Event]:
        """What happened since the last call (see events.py)."""
        events = self._events[:]
        self._events.clear()
        return events

    def _ip_send(self, dst: bytes, proto: int, parts: tuple[bytes, ...]) -> None:
        self._ident = (self._ident + 1) & 0xFFFF
        size = sum(map(len, parts))
        self.arp.output(dst, (ipv4.header(self.ip, dst, proto, size, self._ident), *parts),
                        self._now)

    # --- timers --------------------------------------------------------------------------

    def next_timer_ns(self) -> int | None:
        """When `on_timer` must next be called (ARP retries, TCP timers), or None."""
        arp, tcp = self.arp.next_timer_ns(), self.tcp.next_timer_ns()
        return tcp if arp is None else arp if tcp is None else min(arp, tcp)

    def on_timer(self, now_ns: int) -> None:
        """Advance the clock to now_ns and run what is due. Cheap when nothing is."""
        self._now = now_ns
        self.arp.on_timer(now_ns)
        self.tcp.on_timer(now_ns)

    # --- UDP -----------------------------------------------------------------------------

    def udp_bind(self, port: int, *, echo: bool = False) -> None:
        """Deliver datagrams for port as UdpDatagram events, or (echo=True) answer them here."""
        self._udp_ports[_checked_port(port)] = echo

    def udp_unbind(self, port: int) -> None:
        """Stop receiving on port (later datagrams count as udp_no_listener)."""
        self._udp_ports.pop(port, None)

    def udp_echo_allowed(self, datagram: UdpDatagram) -> bool:
        """Whether an echo of datagram may be sent: the rule the stack's own echo follows (not
        to a broadcast, nor to port 0 or another echo port, nor beyond the MTU); a refusal is counted."""
        refusal = _udp_echo_refusal(datagram.broadcast, datagram.src_port, datagram.port, len(datagram.data),
                                    self._max_udp_data)
        if refusal is not None:
            self.counters[refusal] += 1
        return refusal is None

    def udp_send(self, src_port: int, dst_ip: str, dst_port: int, data: Buffer) -> None:
        """Send one datagram (resolving dst_ip by ARP first if needed)."""
        dst = ipv4.parse_addr(dst_ip)
        _checked_port(src_port)
        _checked_port(dst_port)
        if len(data) > self._max_udp_data:
            raise ValueError(f"{len(data)} bytes do not fit the MTU (no fragmentation)")
        if dst == self.ip:
            raise ValueError("no loopback: cannot send to our own address")
        if not ipv4.is_host(dst) and dst not in self._broadcasts:
            raise ValueError(f"{dst_ip} is neither a host nor a broadcast address")
        data = bytes(data)
        self._ip_send(dst, ipv4.PROTO_UDP, (udp.header(self.ip, dst, src_port, dst_port, data),
                                            data))

    # --- TCP -----------------------------------------------------------------------------

    def tcp_listen(self, port: int) -> None:
        """Accept connections on port (TcpAccepted events)."""
        self.tcp.listening.add(_checked_port(port))

    def tcp_send(self, conn: TcpConn, data: Buffer) -> int:
        """Queue data on conn; returns how many bytes the send buffer took (maybe 0).

        When less than offered was taken, a TcpWritable event follows once there is room.
        """
        return self.tcp.send(conn, data)

    def tcp_close(self, conn: TcpConn) -> None:
        """Send FIN after the queued data; TcpClosed follows when the close completes."""
        self.tcp.close(conn)

    def tcp_abort(self, conn: TcpConn) -> None:
        """Send RST and forget conn now (a TcpClosed(conn, "aborted") event follows)."""
        self.tcp.abort(conn)

    def tcp_pause_receive(self, conn: TcpConn, paused: bool = True) -> None:
        """Let the receive window run down to zero (backpressure), or reopen it."""
        self.tcp.pause(conn, paused)

    @property
    def connections(self) -> list[TcpConn]:
        """Live TCP connections (including half-open and TIME_WAIT ones)."""
        return list(self.tcp.conns.values())
