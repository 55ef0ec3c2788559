"""ARP (RFC 826) for IPv4 over Ethernet: answer requests, cache mappings, resolve before sending.

The cache learns from requests and replies following RFC 826's merge rule: an existing entry
for the sender is refreshed by any ARP packet; a new entry is made only when the packet is
addressed to us. Entries do not expire (a host that changes its MAC announces itself, which
refreshes the entry); the cache holds at most `cache_size` entries and forgets the oldest.
A sender claiming our own MAC, a group or all-zero MAC, or an address no host can have is
refused (counted). An ARP probe (sender address 0.0.0.0, RFC 5227) for our address is
answered to the prober's MAC, target address 0.0.0.0, and teaches the cache nothing.
IPv4 packets for an unresolved address wait in a bounded per-address queue (for at most
`cache_size` addresses at once) while requests are retried every `retry_ns`, at most
`retries` times; then the queue is dropped and counted.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from . import ethernet, ipv4
from .checksum import Buffer

PACKET = struct.Struct("!HHBBH6s4s6s4s")
PACKET_LEN = 28
OP_REQUEST = 1
OP_REPLY = 2
_FIXED = (1, ethernet.TYPE_IPV4, 6, 4)  # htype Ethernet, ptype IPv4, hlen, plen
_UNSPECIFIED = b"\x00\x00\x00\x00"
_ZERO_MAC = b"\x00" * 6


@dataclass(frozen=True)
class ArpConfig:
    """Tunables of the ARP layer."""

    cache_size: int = 256
    retry_ns: int = 1_000_000_000
    retries: int = 3
    queue_limit: int = 512  # packets held per unresolved neighbour: a restarted client answers its whole rx pool


@dataclass
class _Pending:
    packets: list[bytes] = field(default_factory=list)
    requests_sent: int = 0
    deadline_ns: int = 0


class Arp:
    """The neighbour layer: frames IPv4 packets, resolving destinations first."""

    def __init__(self, mac: bytes, ip: bytes, out: list[bytes], counters: Counter[str],
                 config: ArpConfig, broadcasts: frozenset[bytes]) -> None:
        """broadcasts: the IPv4 broadcast addresses, sent to the Ethernet broadcast address."""
        self.mac = mac
        self.ip = ip
        self._broadcasts = broadcasts
        self.cache: dict[bytes, bytes] = {}
        self._out = out
        self._counters = counters
        self._config = config
        self._pending: dict[bytes, _Pending] = {}
        self._src_and_type = mac + ethernet.TYPE_IPV4.to_bytes(2, "big")

    def receive(self, frame: Buffer, now_ns: int) -> None:
        """Handle one ARP frame (Ethernet header included)."""
        if len(frame) < ethernet.HEADER_LEN + PACKET_LEN:
            self._counters["arp_truncated"] += 1
            return
        htype, ptype, hlen, plen, op, sha, spa, _, tpa = PACKET.unpack_from(frame,
                                                                         ethernet.HEADER_LEN)
        if (htype, ptype, hlen, plen) != _FIXED:
            self._counters["arp_bad_format"] += 1
        elif op != OP_REQUEST and op != OP_REPLY:
            self._counters["arp_bad_op"] += 1
        elif not self._valid_sender(sha, spa):
            self._counters["arp_bad_sender"] += 1
        elif sha == self.mac:
            self._counters["arp_sender_is_our_mac"] += 1
        elif spa == self.ip:
            self._counters["arp_address_conflict"] += 1
        else:
            for_us = tpa == self.ip
            if spa != _UNSPECIFIED and (for_us or spa in self.cache):
                self._learn(spa, sha, now_ns)
            if not for_us:
                self._counters["arp_not_for_us"] += 1
            elif op == OP_REQUEST:
                self._out.append(ethernet.header(sha, self.mac, ethernet.TYPE_ARP)
                                 + PACKET.pack(*_FIXED, OP_REPLY, self.mac, self.ip, sha, spa))

    def _valid_sender(self, sha: bytes, spa: bytes) -> bool:
        """A unicast, non-zero MAC, and a host's address or 0.0.0.0 (a probe's)."""
        return ethernet.is_unicast(sha) and sha != _ZERO_MAC and spa not in self._broadcasts \
            and (ipv4.is_host(spa) or spa == _UNSPECIFIED)

    def output(self, dst_ip: bytes, parts: tuple[bytes, ...], now_ns: int) -> None:
        """Send the IPv4 packet made of parts to dst_ip, resolving its MAC first if needed."""
        mac = ethernet.BROADCAST if dst_ip in self._broadcasts else self.cache.get(dst_ip)
        if mac is not None:
            self._out.append(b"".join((mac, self._src_and_type, *parts)))
            return
        pending = self._pending.get(dst_ip)
        if pending is None:
            if len(self._pending) >= self._config.cache_size:
                self._counters["arp_too_many_pending"] += 1
                return
            pending = self._pending[dst_ip] = _Pending()
            self._request(dst_ip, pending, now_ns)
        if len(pending.packets) >= self._config.queue_limit:
            self._counters["arp_queue_full"] += 1
        else:
            pending.packets.append(b"".join(parts))

    def next_timer_ns(self) -> int | None:
        """When the earliest request retry is due, or None."""
        return min((p.deadline_ns for p in self._pending.values()), default=None)

    def on_timer(self, now_ns: int) -> None:
        """Retry due requests; give up (dropping the queued packets) after the last one."""
        for ip, pending in list(self._pending.items()):
            if pending.deadline_ns > now_ns:
                continue
            if pending.requests_sent > self._config.retries:
                self._counters["arp_unresolved"] += len(pending.packets)
                del self._pending[ip]
            else:
                self._request(ip, pending, now_ns)

    def _request(self, ip: bytes, pending: _Pending, now_ns: int) -> None:
        pending.requests_sent += 1
        pending.deadline_ns = now_ns + self._config.retry_ns
        self._out.append(ethernet.header(ethernet.BROADCAST, self.mac, ethernet.TYPE_ARP)
                         + PACKET.pack(*_FIXED, OP_REQUEST, self.mac, self.ip, b"\0" * 6, ip))

    def _learn(self, ip: bytes, mac: bytes, now_ns: int) -> None:
        cache = self.cache
        if ip not in cache and len(cache) >= self._config.cache_size:
            del cache[next(iter(cache))]
        cache[ip] = mac
        pending = self._pending.pop(ip, None)
        if pending is not None:
            for packet in pending.packets:
                self.output(ip, (packet,), now_ns)
