"""What ``sddf fuzz`` can fuzz: every piece of pysddf that reads another component's bytes.

Each function here builds a target: a function of the fuzzer's bytes that raises only for a
finding (``sddf.tools.fuzz`` names them). Each net component of the echo system and the timer
driver, with the fuzzer as its hostile peers (:mod:`sddf.tools.fuzz_bench`); the netstack; PPC
message decoding; PD configs and system descriptions as the loader checks them; and
:func:`component`, any PD of a user's system.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import typing
from typing import Any, Callable

from sddf.apps.netstack import EchoService, NetStack
from sddf.apps.systems import echo, timer
from sddf.cli import load_system, system_file
from sddf.config import ConfigError, PdConfig, typed
from sddf.net.config import (NetClientConfig, NetCopierConfig, NetDriverConfig, NetVirtRxConfig,
                             NetVirtTxConfig)
from sddf.ppc import (PPC_MALFORMED, REPLY_ANSWERED, REPLY_MESSAGE, REQUEST_MESSAGE, REQUEST_SEQUENCE, Callee,
                      CallFds, CallPath, MalformedCall, read_message, write_message)
from sddf.shm import PAGE_SIZE
from sddf.system import (Channel, InvalidSystem, Irq, Map, MemoryRegion, ProtectionDomain, QueueInfo,
                         SEND_ERRORS, SystemDescription)
from sddf.timer.config import TimerClientConfig, TimerDriverConfig
from sddf.tools.fuzz_bench import Scenario
from sddf.tools.fuzz_checks import answers_ping, container_sizes, timer_wakes
from sddf.tools.fuzz_input import Draw, Finding, TcpPeer, arp_answer, frame, ppc_message

TargetFunction = Callable[[bytes], None]
STACK_MAC, STACK_IP = bytes.fromhex("020000000002"), "10.0.0.2"
MAX_NETSTACK_EVENTS = 256
MAX_REPLIES = 128       # frames the stack may send for one frame in or one timer, besides one per
                        # connection: what waited for an ARP answer (64) and a send buffer's segments (45)
MAX_STACK_GROWTH = 4096
MAX_DEPTH = 4           # nesting of fuzzed config values
MAX_ITEMS = 8


# ---- the netstack ----------------------------------------------------------------------------
def netstack() -> TargetFunction:
    def run(data: bytes) -> None:
        draw = Draw(data)
        stack = NetStack(mac=STACK_MAC, ip=STACK_IP, seed=0)
        service = EchoService(stack, udp_port=1235, tcp_port=1236)
        stack.udp_bind(1237, echo=True)
        baseline, peer, now = container_sizes(stack), TcpPeer(), 0
        hosts = [(STACK_MAC, socket.inet_aton(STACK_IP))]
        for _ in range(MAX_NETSTACK_EVENTS):
            if draw.exhausted:
                break
            now += draw.maybe(1000, lambda: draw.uint(5) * 1000)
            if draw.chance(8):
                stack.on_timer(now)
                what = "a timer"
            else:
                stack.receive(frame(draw, hosts, peer), now)
                what = "one frame"
            out = _outputs(stack, service, peer, now)
            limit = MAX_REPLIES + len(stack.connections)  # a timer may retransmit on every connection
            if len(out) > limit or any(len(f) > stack.config.mtu + 14 for f in out):
                raise Finding(f"the stack answered {what} with {len(out)} frames (at most {limit}) of up to "
                              f"{max(map(len, out))} bytes (MTU {stack.config.mtu})")
        grown = {path: size for path, size in container_sizes(stack).items()
                 if size - baseline.get(path, 0) > MAX_STACK_GROWTH}
        if grown:
            raise Finding(f"the stack's containers grew: {grown}")
    return run


def _outputs(stack: NetStack, service: EchoService, peer: TcpPeer, now: int) -> list[bytes]:
    """What the stack sends after its events were handled, the outside world answering its ARP
    requests (which releases what waited for them)."""
    service.handle(stack.events())
    out = stack.take_frames()
    answers = [answer for f in out if (answer := arp_answer(f)) is not None]
    for answer in answers:
        stack.receive(answer, now)
    if answers:
        service.handle(stack.events())
        out += stack.take_frames()
    for f in out:
        peer.learn(f)
    return out


# ---- PPC messages ----------------------------------------------------------------------------
def ppc() -> TargetFunction:
    """A real call path: the fuzzer writes the caller's request page (message and sequence number)
    and the callee takes it; then it writes a reply as a hostile callee would and decodes it as
    the caller does."""
    path = CallPath("fuzzer", "callee")
    callee = Callee(CallFds(*(os.dup(fd) for fd in dataclasses.astuple(path.callee_fds()))), path.name)
    request, reply = path.request.view, path.reply.view
    sequence = [0]

    def run(data: bytes) -> None:
        draw = Draw(data)
        message = ppc_message(draw)
        request[REQUEST_MESSAGE:REQUEST_MESSAGE + len(message)] = message
        sequence[0] = draw.maybe(sequence[0] + 1, lambda: draw.uint(8))
        request[REQUEST_SEQUENCE:REQUEST_SEQUENCE + 8] = sequence[0].to_bytes(8, "little")
        try:
            call = callee.take()
        except MalformedCall:
            callee.answer(PPC_MALFORMED, [])
            call = None
        if call is not None:
            _check_message(*call)
            callee.answer(*call)
            if read_message(reply, REPLY_MESSAGE, "reply") != (call[0], list(call[1])):
                raise Finding(f"the answer {call} did not read back as sent")
        message = ppc_message(draw)
        reply[REPLY_MESSAGE:REPLY_MESSAGE + len(message)] = message
        reply[REPLY_ANSWERED:REPLY_ANSWERED + 8] = draw.take(8).ljust(8, b"\0")
        try:
            _check_message(*read_message(reply, REPLY_MESSAGE, "reply"))
        except MalformedCall:
            pass
    return run


def _check_message(label: int, mrs: list[int]) -> None:
    """A decoded message is one that can be sent again: an i64 label, at most 120 u64 registers."""
    scratch = memoryview(bytearray(PAGE_SIZE))
    try:
        write_message(scratch, 0, label, mrs, "fuzz")
    except ValueError as exc:
        raise Finding(f"decoded label {label} with {len(mrs)} registers cannot be sent: {exc}") from None
    if read_message(scratch, 0, "fuzz") != (label, list(mrs)):
        raise Finding(f"label {label} with registers {mrs} did not read back as written")


# ---- the loader: PD configs and system descriptions --------------------------------------------
CONFIGS = (NetDriverConfig, NetVirtRxConfig, NetVirtTxConfig, NetCopierConfig, NetClientConfig,
           TimerDriverConfig, TimerClientConfig)
PROGRAMS = {"sddf.drivers.net.tap:TapDriver": NetDriverConfig, "sddf.virtualisers.net.rx:NetVirtRx": NetVirtRxConfig,
            "sddf.virtualisers.net.copy:NetCopier": NetCopierConfig, "sddf.apps.echo_server:EchoServer": NetClientConfig,
            "sddf.drivers.timer.timerfd:TimerDriver": TimerDriverConfig,
            "sddf.apps.timer_client:TimerClient": TimerClientConfig, "sddf.component:Component": None,
            "sddf.system:InvalidSystem": None, "sddf.apps.echo_server:Nope": None, "sddf.no_such_module:X": None,
            "sddf": None, ":": None, "": None}  # program -> its Config
NAMES = ("a", "b", "rx", "tx", "x" * 65, "", "a/b", "tab\t")
SOURCES = ("timerfd", "tap:sddf0", "tap:t0,mtu=1500,mac=02:00:00:00:00:01,addr=10.0.0.1/24", "tap:",
           "tap:t0,mtu=x", "tap:t0,nope=1", "timerfd:x", "serial", "tap:t0,,", "tap:t0,mac=zz")


def config() -> TargetFunction:
    """A PD config as the PD receives it (through msgpack) against a component's Config: only
    ConfigError may escape ``typed``."""
    def run(data: bytes) -> None:
        draw = Draw(data)
        cls = draw.pick(CONFIGS)
        sent = _as_sent(_value(draw, cls, 0))
        if sent is not None:
            try:
                typed(cls, sent, "PD 'fuzzed'")
            except ConfigError:
                pass
    return run


def system() -> TargetFunction:
    """A system description with fuzzed names, sizes, priorities, channels, maps, irqs, children,
    queues and configs: ``check()`` and ``render()`` raise only InvalidSystem."""
    def run(data: bytes) -> None:
        draw = Draw(data)
        try:
            sdf = _system(draw)
            sdf.check()
            sdf.render()
        except InvalidSystem:
            pass
    return run


def _system(draw: Draw) -> SystemDescription:
    sdf = SystemDescription(_name(draw))
    regions = [sdf.add_mr(MemoryRegion(_name(draw), _int(draw, PAGE_SIZE), draw.maybe(None, lambda: _int(draw, 0))))
               for _ in range(draw.below(4))] or [MemoryRegion("orphan", PAGE_SIZE)]
    pds = [sdf.add_pd(_pd(draw)) for _ in range(1 + draw.below(4))]
    for _ in range(draw.below(16)):
        pd, other = draw.pick(pds), draw.pick(pds)
        step = draw.below(5)
        if step == 0:
            perms: Any = draw.maybe(draw.pick(("rw", "r")), lambda: _name(draw))
            pd.add_map(Map(draw.pick(regions), perms, draw.maybe(None, lambda: _name(draw))))
        elif step == 1:
            sdf.add_channel(Channel(pd, other, draw.chance(2), draw.chance(2), _channel_id(draw), _channel_id(draw)))
        elif step == 2:
            sdf.add_irq(Irq(pd, draw.maybe(draw.pick(SOURCES), lambda: _name(draw)), _channel_id(draw),
                            draw.maybe(None, lambda: _int(draw, 30))))
        elif step == 3:
            pd.add_child_pd(other, draw.maybe(None, lambda: _int(draw, 1)))
        else:
            sdf.add_queue(QueueInfo(_name(draw), draw.maybe(draw.pick(regions).name, lambda: _name(draw)), 0,
                                    "net", _int(draw, 512)))
    return sdf


def _pd(draw: Draw) -> ProtectionDomain:
    program = draw.pick(list(PROGRAMS))
    policy: Any = draw.maybe("stop", lambda: draw.pick(("restart", _name(draw))))
    pd = ProtectionDomain(_name(draw), program, priority=_int(draw, 100),
                          cpu=draw.maybe(None, lambda: _int(draw, 0)), fault_policy=policy,
                          max_restarts=_int(draw, 3), restart_window_s=float(_int(draw, 60)),
                          allow=tuple(draw.pick(("files", "sockets", "exec", "root")) for _ in range(draw.below(3))),
                          memory_bytes=draw.maybe(None, lambda: _int(draw, 1 << 20)),
                          ledger_words=_int(draw, 0))
    pd.config = draw.maybe(_value(draw, PROGRAMS[program] or draw.pick(CONFIGS), 0), dict)
    return pd


def _name(draw: Draw) -> str:
    return draw.maybe(draw.pick(NAMES), lambda: draw.take(draw.below(80)).decode("utf-8", "surrogateescape"), 4)


def _int(draw: Draw, good: int) -> int:
    """``good`` mostly, else a value around the edges: 0, -1, a 64-bit value, one beyond."""
    return draw.maybe(good, lambda: draw.pick((0, -1, 1 << 64, -(1 << 63) - 1, draw.uint(8) - (1 << 63))), 4)


def _channel_id(draw: Draw) -> int | None:
    return draw.maybe(None, lambda: draw.pick((draw.below(64), 62, 63, -1, draw.uint(2))), 2)


def _value(draw: Draw, hint: Any, depth: int) -> Any:
    """A value for a field of type ``hint``: mostly of that type (a dataclass as the dict it is
    sent as, with now and then a field missing or an unknown one), now and then anything."""
    if depth >= MAX_DEPTH or draw.chance(8):
        return _anything(draw, depth)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        value = {f.name: _value(draw, hints[f.name], depth + 1) for f in dataclasses.fields(hint) if not draw.chance(16)}
        for _ in range(draw.maybe(0, lambda: 1 + draw.below(3))):
            value[_anything(draw, MAX_DEPTH)] = _anything(draw, depth + 1)  # a field it does not have
        return value
    if origin is list:
        return [_value(draw, args[0] if args else Any, depth + 1) for _ in range(draw.below(MAX_ITEMS))]
    if args:  # a union: one of its members
        return _value(draw, draw.pick(args), depth + 1)
    return {int: lambda: _int(draw, draw.uint(2)), str: lambda: _name(draw), bytes: lambda: draw.take(draw.below(8)),
            bool: lambda: draw.chance(2), float: lambda: float(_int(draw, 1)), type(None): lambda: None,
            }.get(hint, lambda: _anything(draw, depth))()


def _anything(draw: Draw, depth: int) -> Any:
    """Any value msgpack may carry (or not: an int beyond 64 bits, a lone surrogate)."""
    kinds = ["int", "str", "bytes", "bool", "none", "float"] + (["list", "dict"] if depth < MAX_DEPTH else [])
    kind = draw.pick(kinds)
    if kind == "list":
        return [_anything(draw, depth + 1) for _ in range(draw.below(MAX_ITEMS))]
    if kind == "dict":
        return {_anything(draw, MAX_DEPTH): _anything(draw, depth + 1) for _ in range(draw.below(MAX_ITEMS))}
    return {"int": lambda: _int(draw, draw.uint(1)), "str": lambda: _name(draw), "bytes": lambda: draw.take(draw.below(8)),
            "bool": lambda: draw.chance(2), "none": lambda: None, "float": lambda: draw.uint(8) / 7}[kind]()


def _as_sent(value: Any) -> Any:
    """``value`` as a PD config reaches the PD (through msgpack), or None if it cannot be sent
    (``check()`` reports that; it is not ``typed``'s to see)."""
    try:
        return PdConfig.unpack(PdConfig("", "", 0, None, -1, app=value).pack()).app
    except SEND_ERRORS:
        return None


# ---- components of the bundled systems, the fuzzer as their hostile peers -------------------------
def driver() -> TargetFunction:
    return Scenario(echo.system, "eth_driver", ("net_virt_rx", "net_virt_tx"))


def virt_rx() -> TargetFunction:
    return Scenario(echo.system, "net_virt_rx", ("client0",), (answers_ping("client1"),))


def virt_tx() -> TargetFunction:
    return Scenario(echo.system, "net_virt_tx", ("client0",), (answers_ping("client1"),))


def copier() -> TargetFunction:
    return Scenario(echo.system, "client1_copier", ("client1",), (answers_ping("client0"),))


def client0() -> TargetFunction:
    return Scenario(echo.system, "client0", ("eth_driver", "net_virt_rx", "net_virt_tx"))


def client1() -> TargetFunction:
    return Scenario(echo.system, "client1", ("client1_copier", "net_virt_tx"))


def timer_driver() -> TargetFunction:
    return Scenario(timer.system, "timer_driver", ("client1",), (timer_wakes("client2"),))


def component(spec: str) -> TargetFunction:
    """``SYSTEM:PD``: PD ``PD`` of a system file, bundled system or dotted system module, with every
    PD that may write a region it maps, or call it, played by the fuzzer."""
    system_spec, _, pd = spec.rpartition(":")
    build = _system_builder(system_spec)
    sdf = build()
    try:
        sdf.check()
    except InvalidSystem as exc:
        raise SystemExit(f"sddf fuzz: {system_spec}: {exc}") from None
    if pd not in {p.name for p in sdf.pds}:
        raise SystemExit(f"sddf fuzz: system {sdf.name!r} has no PD {pd!r} (it has: {', '.join(p.name for p in sdf.pds)})")
    return Scenario(build, pd)


def _system_builder(spec: str) -> Callable[[], SystemDescription]:
    """What builds the system ``spec`` names: a system file, a bundled system, a dotted module."""
    if system_file(spec) is None or os.path.isfile(spec):
        return lambda: load_system(spec)
    try:
        module = importlib.import_module(spec)
    except ImportError as exc:
        raise SystemExit(f"sddf fuzz: {spec!r} is no system file, bundled system or importable module ({exc})") from None
    build = getattr(module, "system", None)
    if not callable(build):
        raise SystemExit(f"sddf fuzz: module {spec} defines no system() function")
    return build
