"""The Internet checksum (RFC 1071) computed at C speed with big-integer arithmetic.

Because 2**16 == 1 (mod 0xFFFF), the one's-complement sum of a run of 16-bit words is
congruent to the whole run read as one big integer, modulo 0xFFFF. `int.from_bytes` and `%`
both run in C, so a 1480-byte payload costs ~3 us instead of ~15 us for `sum(array('H'))`.
Reading the bytes little-endian is about twice as fast as big-endian; the one's-complement
sum is byte-order independent (RFC 1071 §2(B)), so the residue is byte-swapped at the end.
An odd trailing byte is padded with zero for free: little-endian zero padding adds nothing.

All functions here work on *residues* (0..0xFFFE): residues of adjacent even-length pieces,
and of pseudo-header fields, simply add. A packet whose checksum field is filled in has a
residue of 0 over its covered bytes.
"""
from __future__ import annotations

Buffer = bytes | bytearray | memoryview

MOD = 0xFFFF


def residue(data: Buffer) -> int:
    """Residue mod 0xFFFF of the big-endian 16-bit word sum of data (odd length zero-padded)."""
    r = int.from_bytes(data, "little") % MOD
    return (r >> 8) | ((r & 0xFF) << 8)


def field(total_residue: int) -> int:
    """The checksum field value that makes bytes with this residue (field zeroed) sum to zero.

    Never 0, so it is valid for UDP, where 0 means "no checksum" (RFC 768).
    """
    return MOD - total_residue % MOD


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Residue of the IPv4 pseudo-header (not reduced: residues may be added before `%`)."""
    return int.from_bytes(src + dst, "big") + proto + length


def checksum(data: Buffer, initial: int = 0) -> int:
    """Checksum field value for data (its checksum field zeroed) plus an initial residue."""
    return field(residue(data) + initial)


def valid(data: Buffer, initial: int = 0) -> bool:
    """True when data, checksum field included, plus the initial residue sums to zero."""
    return (residue(data) + initial) % MOD == 0
