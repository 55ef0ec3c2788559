"""Host devices that back irq channels, opened by the monitor and passed to their driver PD.

Irq sources: ``timerfd``; ``tap:NAME[,mtu=N][,mac=aa:bb:..][,addr=A.B.C.D/P]`` — a TAP
interface (IFF_TAP | IFF_NO_PI, non-blocking) in the monitor's network namespace, with the
link MTU/MAC set and, with ``addr``, the host side's address assigned and the link up;
``blk:PATH[,access=ro]`` — a disk image file or block device, opened read-write (or read-only);
``serial:console`` — the terminal ``sddf run`` runs in (raw while it runs; its stdout and stdin
when stdin is no terminal), ``serial:stdout`` — output only, to the monitor's stdout (the
terminal left as it is), ``serial:pty`` — a new pty whose path is printed, ``serial:tty=/dev/…`` — a given
tty device (raw while it runs); see :mod:`sddf.console`.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
import termios
from functools import partial
from typing import Callable

from sddf import console
from sddf.channel import new_timerfd

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_UP = 0x1
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
SIOCSIFMTU, SIOCSIFHWADDR = 0x8922, 0x8924
ARPHRD_ETHER = 1


class DeviceError(Exception):
    """A device named by an irq source could not be opened; says which and what to do."""


def _timerfd(source: str, _options: dict[str, str]) -> int:
    try:
        return new_timerfd()
    except OSError as exc:
        raise DeviceError(f"irq source {source!r}: timerfd_create failed: {exc.strerror}") from exc


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


def _sockaddr_in(addr: str) -> bytes:
    return struct.pack("<H2s4s8x", socket.AF_INET, b"\0\0", socket.inet_aton(addr))


def _tap(source: str, options: dict[str, str]) -> int:
    name = options.pop("", "")
    if not name or len(name) > 15:
        raise DeviceError(f"irq source {source!r}: a TAP device needs a name of 1-15 characters")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"irq source {source!r}: cannot open /dev/net/tun ({exc.strerror}); "
                          "TAP devices need root or CAP_NET_ADMIN — run as root, or use "
                          "`sddf run --netns SYSTEM` to run in a private network namespace") from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", IFF_TAP | IFF_NO_PI)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if "mtu" in options:
                fcntl.ioctl(s, SIOCSIFMTU, _ifreq(name, struct.pack("i", int(options.pop("mtu")))))
            if "mac" in options:
                mac = bytes.fromhex(options.pop("mac").replace(":", ""))
                fcntl.ioctl(s, SIOCSIFHWADDR, _ifreq(name, struct.pack("H6s", ARPHRD_ETHER, mac)))
            if "addr" in options:
                iface = ipaddress.IPv4Interface(options.pop("addr"))
                fcntl.ioctl(s, SIOCSIFADDR, _ifreq(name, _sockaddr_in(str(iface.ip))))
                fcntl.ioctl(s, SIOCSIFNETMASK, _ifreq(name, _sockaddr_in(str(iface.netmask))))
                flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name)), 16)[0]
                fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags | IFF_UP)))
    except (OSError, ValueError) as exc:
        os.close(fd)
        raise DeviceError(f"irq source {source!r}: cannot set up TAP device {name!r}: {exc}") from exc
    if options:
        os.close(fd)
        raise DeviceError(f"irq source {source!r}: unknown TAP option(s) {sorted(options)}")
    return fd


BLK_ACCESS = {"rw": os.O_RDWR, "ro": os.O_RDONLY}


def _blk(source: str, options: dict[str, str]) -> int:
    problem = _check_blk(dict(options))
    if problem:
        raise DeviceError(f"irq source {source!r}: {problem}")
    path, access = options[""], options.get("access", "rw")
    try:
        return os.open(path, BLK_ACCESS[access] | os.O_CLOEXEC)
    except OSError as exc:
        hint = {errno.ENOENT: f" (make one with `sddf blk mkimage {path} --size 64M --partition 32M,fat`)",
                errno.EACCES: " (open it read-only with access=ro)" if access == "rw" else "",
                errno.EROFS: " (open it read-only with access=ro)" if access == "rw" else ""}.get(exc.errno, "")
        raise DeviceError(f"irq source {source!r}: cannot open block image {path!r}: {exc.strerror}{hint}") from exc


def _serial(source: str, options: dict[str, str]) -> int:
    problem = _check_serial(dict(options))
    if problem:
        raise DeviceError(f"irq source {source!r}: {problem}")
    path = options.get("tty")
    try:
        if path is not None:
            return console.open_raw(path)
        return SERIAL_OPENERS[options[""]]()
    except (OSError, termios.error) as exc:
        what = f"tty {path!r}" if path is not None else f"the {options['']}"
        reason = (exc.strerror or exc) if isinstance(exc, OSError) else exc.args[-1]
        raise DeviceError(f"irq source {source!r}: cannot open {what}: {reason}") from exc


OPENERS = {"timerfd": _timerfd, "tap": _tap, "blk": _blk, "serial": _serial}


def parse_source(source: str) -> tuple[str, dict[str, str]]:
    """``"kind:arg,key=value,…"`` → (kind, {"": arg, key: value, …})."""
    kind, _, rest = source.partition(":")
    options: dict[str, str] = {}
    for i, item in enumerate(filter(None, rest.split(","))):
        key, eq, value = item.partition("=")
        if eq:
            options[key] = value
        elif i == 0:
            options[""] = key
        else:
            raise DeviceError(f"irq source {source!r}: option {item!r} is not key=value")
    return kind, options


def _unknown_kind(source: str, kind: str) -> str:
    return f"irq source {source!r}: unknown device kind {kind!r} (known: {', '.join(sorted(OPENERS))})"


def open_device(source: str) -> int:
    """Open the host device an irq ``source`` names and return its fd."""
    kind, options = parse_source(source)
    opener = OPENERS.get(kind)
    if opener is None:
        raise DeviceError(_unknown_kind(source, kind))
    return opener(source, options)


IFNAME_MAX = 15  # IFNAMSIZ less the NUL


def _mtu(value: str) -> None:
    if int(value) <= 0:
        raise ValueError(value)


def _mac(value: str) -> None:
    if len(bytes.fromhex(value.replace(":", ""))) != 6:
        raise ValueError(value)


#: each TAP option and its checker (which raises ValueError on a malformed value)
TAP_OPTIONS: dict[str, Callable[[str], object]] = {"mtu": _mtu, "mac": _mac, "addr": ipaddress.IPv4Interface}


def _check_tap(options: dict[str, str]) -> str | None:
    name = options.pop("", "")
    if not 0 < len(name) <= IFNAME_MAX:
        return f"a TAP device needs a name of 1-{IFNAME_MAX} characters"
    unknown = sorted(set(options) - set(TAP_OPTIONS))
    if unknown:
        return f"unknown TAP option(s) {unknown} (known: {', '.join(TAP_OPTIONS)})"
    for key, value in options.items():
        try:
            TAP_OPTIONS[key](value)
        except ValueError:
            return f"malformed TAP option {key}={value!r}"
    return None


def _check_timerfd(options: dict[str, str]) -> str | None:
    return f"a timerfd takes no options, not {sorted(options)}" if options else None


def _check_blk(options: dict[str, str]) -> str | None:
    if not options.pop("", ""):
        return "a block device needs the path of its image: blk:PATH[,access=ro]"
    unknown = sorted(set(options) - {"access"})
    if unknown:
        return f"unknown block option(s) {unknown} (known: access)"
    if options.get("access", "rw") not in BLK_ACCESS:
        return f"access={options['access']!r}: choose from {', '.join(BLK_ACCESS)}"
    return None


SERIAL_USAGE = "serial:console, serial:stdout, serial:pty or serial:tty=/dev/…"
SERIAL_OPENERS = {"console": console.open_console, "stdout": partial(console.open_stdio, read_input=False),
                  "pty": console.open_pty}


def _check_serial(options: dict[str, str]) -> str | None:
    if (list(options) == [""] and options[""] in SERIAL_OPENERS) or (list(options) == ["tty"] and options["tty"]):
        return None
    return f"a serial device is {SERIAL_USAGE}"


CHECKERS = {"timerfd": _check_timerfd, "tap": _check_tap, "blk": _check_blk, "serial": _check_serial}


def check_source(source: str) -> str | None:
    """What is wrong with an irq ``source`` (None if nothing), found without opening the device."""
    try:
        kind, options = parse_source(source)
    except DeviceError as exc:
        return str(exc)
    checker = CHECKERS.get(kind)
    if checker is None:
        return _unknown_kind(source, kind)
    problem = checker(options)
    return None if problem is None else f"irq source {source!r}: {problem}"
