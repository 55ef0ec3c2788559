"""System descriptions: protection domains, memory regions, maps, channels, irqs (mirrors sdfgen).

A system file builds a :class:`SystemDescription` (like sdfgen's ``meta.py``), the monitor
runs it, ``render()`` turns it into the equivalent Microkit system XML. ``check()`` validates
it and raises :class:`InvalidSystem` listing every problem, each naming its culprit.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal
from xml.etree import ElementTree as ET

from sddf.config import ConfigError, PdConfig
from sddf.devices import check_source
from sddf.sandbox import ALLOWABLE
from sddf.shm import PAGE_SIZE, round_to_pages

MAX_CHANNEL_ID = 62
IO_BASE, IO_ALIGN = 0x4000_0000, 0x200000  # where io ("physical") addresses of regions start; their alignment
MAX_PRIORITY = 254
MAX_NAME = 64  # system, PD and region names: they end up in file, socket and process names
MAX_REGION_SIZE_ENV = "SDDF_MAX_REGION_SIZE"
DEFAULT_MAX_REGION_SIZE = 16 << 30
MAX_LEDGER_WORDS = 1 << 20
MAX_POLL_US = 1_000_000  # a bounded poll spins at most a second
SIZE_SUFFIXES = {"K": 10, "M": 20, "G": 30, "T": 40}
SEND_ERRORS = (TypeError, ValueError, OverflowError)  # what msgpack (or dataclasses.asdict) raises
FaultPolicy = Literal["stop", "restart"]


class InvalidSystem(Exception):
    """The description breaks a rule; ``problems`` lists each, naming the offending element."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid system:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(eq=False)
class MemoryRegion:
    """A shared memory region; ``io_addr`` is its "physical" address if a driver may DMA to it."""

    name: str
    size: int
    io_addr: int | None = None


@dataclass(eq=False)
class Map:
    """A PD's mapping of a region; the PD sees it as ``self.regions[name]``."""

    region: MemoryRegion
    perms: Literal["r", "rw"] = "rw"
    name: str | None = None

    @property
    def local_name(self) -> str:
        return self.name or self.region.name


@dataclass(eq=False)
class ProtectionDomain:
    """A component: ``program`` is ``"package.module:Class"`` naming a Component subclass."""

    name: str
    program: str
    priority: int = 100
    budget: int | None = None
    period: int | None = None
    cpu: int | None = None
    passive: bool = False
    fault_policy: FaultPolicy = "stop"
    max_restarts: int = 3          # restarts allowed within any restart_window_s (systemd's start limit)
    restart_window_s: float = 60.0
    watchdog_s: float | None = None  # a handler running longer than this is a fault (None: never)
    allow: tuple[str, ...] = ()  # what it may do after init: "files", "sockets", "exec" (sddf.sandbox)
    memory_bytes: int | None = None  # a cap on its private memory (shared regions do not count)
    ledger_words: int = 0  # words of state its ledger keeps across restarts (sddf.ledger; set by wiring)
    poll_us: int = 0  # spin this long before each sleep (for a PD with a core of its own; 0: never)
    config: dict[str, Any] = field(default_factory=dict)
    maps: list[Map] = field(default_factory=list)
    children: dict[int, "ProtectionDomain"] = field(default_factory=dict)
    parent: "ProtectionDomain | None" = field(default=None, repr=False)

    def add_map(self, m: Map) -> Map:
        self.maps.append(m)
        return m

    def add_child_pd(self, child: "ProtectionDomain", child_id: int | None = None) -> int:
        """Make ``child`` this PD's child: its faults go to this PD's ``fault()`` (Microkit's
        fault handler), which decides whether it restarts. Returns the child's id."""
        if child.parent is not None:
            raise InvalidSystem([f"PD {child.name!r} already has parent {child.parent.name!r}; "
                                 f"it cannot also be a child of {self.name!r}"])
        if child_id is None:
            child_id = next(i for i in range(MAX_CHANNEL_ID + 2) if i not in self.children)
        if child_id in self.children:
            raise InvalidSystem([f"PD {self.name!r}: child id {child_id} is already "
                                 f"{self.children[child_id].name!r}"])
        self.children[child_id] = child
        child.parent = self
        return child_id


@dataclass(eq=False)
class Channel:
    """A notification channel between two PDs; ``pp_a`` lets pd_a make PPCs into pd_b."""

    pd_a: ProtectionDomain
    pd_b: ProtectionDomain
    pp_a: bool = False
    pp_b: bool = False
    id_a: int | None = None
    id_b: int | None = None

    @property
    def pd_a_id(self) -> int:
        assert self.id_a is not None, "channel ids are assigned by SystemDescription.add_channel"
        return self.id_a

    @property
    def pd_b_id(self) -> int:
        assert self.id_b is not None, "channel ids are assigned by SystemDescription.add_channel"
        return self.id_b


@dataclass(eq=False)
class Irq:
    """A host device fd (``source``: "timerfd", "tap:NAME", …) delivered to ``pd`` as channel ``id``.

    ``number`` is the hardware interrupt number the same driver would use on a board; only the
    Microkit XML export needs it (the host has no interrupt numbers)."""

    pd: ProtectionDomain
    source: str
    id: int | None = None
    number: int | None = None


@dataclass(frozen=True)
class QueueInfo:
    """Where a queue lives, so tools (``sddf top``, ``sddf audit``) can read it. ``pools`` are the
    buffer pools its descriptors name, each ``(pool, base, size)``: addresses base..base+size
    are the pool's buffers (a net queue whose pools are given is audited)."""

    label: str
    region: str
    offset: int
    kind: Literal["net", "blk.req", "blk.resp", "serial"]
    capacity: int
    pools: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class LedgerInfo:
    """What a PD's ledger words say, so ``sddf audit`` can read them: ``kind`` names their
    meaning for ``pools`` (``net.virt_rx``: a word per buffer of its one pool; ``net.virt_tx``: a
    word per buffer of each pool in turn; see :mod:`sddf.net.words`)."""

    pd: str
    kind: Literal["net.virt_rx", "net.virt_tx"]
    pools: tuple[tuple[str, int, int], ...]


class SystemDescription:
    """The whole static system."""

    def __init__(self, name: str = "system") -> None:
        self.name = name
        self.pds: list[ProtectionDomain] = []
        self.regions: list[MemoryRegion] = []
        self.channels: list[Channel] = []
        self.irqs: list[Irq] = []
        self.queues: list[QueueInfo] = []
        self.ledgers: list[LedgerInfo] = []

    # ---- building (sdfgen's names) ------------------------------------------------------
    def add_pd(self, pd: ProtectionDomain) -> ProtectionDomain:
        self.pds.append(pd)
        return pd

    def add_mr(self, mr: MemoryRegion) -> MemoryRegion:
        self.regions.append(mr)
        return mr

    def add_io_mr(self, name: str, size: int) -> MemoryRegion:
        """Add a region devices reach by io address ("physical"), placed after every other one
        (each on a 2 MiB boundary, like sdfgen's DMA regions)."""
        used = [mr.io_addr + mr.size for mr in self.regions if mr.io_addr is not None]
        base = -(-max(used, default=IO_BASE) // IO_ALIGN) * IO_ALIGN
        return self.add_mr(MemoryRegion(name, round_to_pages(size), io_addr=base))

    def add_channel(self, ch: Channel) -> Channel:
        """Add a channel, giving each end the lowest free id unless one was chosen."""
        if ch.id_a is None:
            ch.id_a = self._free_id(ch.pd_a)
        if ch.id_b is None:
            ch.id_b = self._free_id(ch.pd_b, taken={ch.id_a} if ch.pd_b is ch.pd_a else set())
        self.channels.append(ch)
        return ch

    def add_irq(self, irq: Irq) -> Irq:
        if irq.id is None:
            irq.id = self._free_id(irq.pd)
        self.irqs.append(irq)
        return irq

    def add_queue(self, info: QueueInfo) -> QueueInfo:
        self.queues.append(info)
        return info

    def pd(self, name: str) -> ProtectionDomain:
        for pd in self.pds:
            if pd.name == name:
                return pd
        raise KeyError(f"system {self.name!r} has no protection domain {name!r}")

    def region(self, name: str) -> MemoryRegion:
        for mr in self.regions:
            if mr.name == name:
                return mr
        raise KeyError(f"system {self.name!r} has no memory region {name!r}")

    def channel_ids(self, pd: ProtectionDomain) -> list[int]:
        """Every channel id ``pd`` uses (channel ends and irqs), in the order they were added."""
        ids = [c.id_a for c in self.channels if c.pd_a is pd]
        ids += [c.id_b for c in self.channels if c.pd_b is pd]
        ids += [i.id for i in self.irqs if i.pd is pd]
        return [i for i in ids if i is not None]

    def _free_id(self, pd: ProtectionDomain, taken: set[int] | None = None) -> int:
        used = set(self.channel_ids(pd)) | (taken or set())
        for i in range(MAX_CHANNEL_ID + 1):
            if i not in used:
                return i
        raise InvalidSystem([f"PD {pd.name!r}: no free channel id (all 0..{MAX_CHANNEL_ID} used)"])

    # ---- validation ---------------------------------------------------------------------
    def check(self) -> None:
        """Raise InvalidSystem listing every rule the description breaks."""
        problems: list[str] = []
        problems += _bad_name("system", self.name)
        problems += _duplicates("protection domain", [pd.name for pd in self.pds])
        problems += _duplicates("memory region", [mr.name for mr in self.regions])
        for pd in self.pds:
            problems += _check_pd(pd, self.regions)
        for irq in self.irqs:
            if (problem := check_source(irq.source)) is not None:
                problems.append(f"PD {irq.pd.name!r}: {problem}")
        known = set(map(id, self.pds))
        for ch in self.channels:
            for pd in (ch.pd_a, ch.pd_b):
                if id(pd) not in known:
                    problems.append(f"channel {ch.pd_a.name}<->{ch.pd_b.name}: PD {pd.name!r} "
                                    "was not added to the system")
            for caller, callee, pp in ((ch.pd_a, ch.pd_b, ch.pp_a), (ch.pd_b, ch.pd_a, ch.pp_b)):
                if pp and callee.priority <= caller.priority:
                    problems.append(
                        f"channel {ch.pd_a.name}<->{ch.pd_b.name}: PPC from {caller.name!r} "
                        f"(priority {caller.priority}) into {callee.name!r} (priority "
                        f"{callee.priority}) needs a callee of strictly higher priority")
        for pd in self.pds:
            for cid, child in pd.children.items():
                if id(child) not in known:
                    problems.append(f"PD {pd.name!r}: child {child.name!r} was not added to the system")
                if not 0 <= cid <= MAX_CHANNEL_ID:
                    problems.append(f"PD {pd.name!r}: child id {cid} is outside 0..{MAX_CHANNEL_ID}")
            ids = self.channel_ids(pd)
            for i in ids:
                if not 0 <= i <= MAX_CHANNEL_ID:
                    problems.append(f"PD {pd.name!r}: channel id {i} is outside 0..{MAX_CHANNEL_ID}")
            problems += [f"PD {pd.name!r}: {p}" for p in _duplicates("channel id", ids)]
        limit = max_region_size()
        for mr in self.regions:
            problems += _check_region(mr, limit)
        problems += _io_overlaps(self.regions)
        for q in self.queues:
            if q.region not in {mr.name for mr in self.regions}:
                problems.append(f"queue {q.label!r}: unknown memory region {q.region!r}")
        if problems:
            raise InvalidSystem(problems)

    # ---- Microkit XML -------------------------------------------------------------------
    def render(self) -> str:
        """The equivalent Microkit system description XML."""
        root = ET.Element("system")
        for mr in self.regions:
            attrs = {"name": mr.name, "size": hex(mr.size)}
            if mr.io_addr is not None:
                attrs["phys_addr"] = hex(mr.io_addr)
            ET.SubElement(root, "memory_region", attrs)
        for pd in self.pds:
            if pd.parent is None:
                self._render_pd(root, pd, None)
        for ch in self.channels:
            el = ET.SubElement(root, "channel")
            for pd, cid, pp in ((ch.pd_a, ch.id_a, ch.pp_a), (ch.pd_b, ch.id_b, ch.pp_b)):
                attrs = {"pd": pd.name, "id": str(cid)}
                if pp:
                    attrs["pp"] = "true"
                ET.SubElement(el, "end", attrs)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def _render_pd(self, parent: ET.Element, pd: ProtectionDomain, child_id: int | None) -> None:
        attrs = {"name": pd.name, "priority": str(pd.priority)}
        if child_id is not None:
            attrs["id"] = str(child_id)
        for key in ("budget", "period", "cpu"):
            if getattr(pd, key) is not None:
                attrs[key] = str(getattr(pd, key))
        if pd.passive:
            attrs["passive"] = "true"
        el = ET.SubElement(parent, "protection_domain", attrs)
        ET.SubElement(el, "program_image", {"path": _image_name(pd.program)})
        vaddr = 0x2000000
        for m in pd.maps:
            ET.SubElement(el, "map", {"mr": m.region.name, "vaddr": hex(vaddr), "perms": m.perms,
                                      "cached": "true", "setvar_vaddr": m.local_name})
            vaddr += -(-m.region.size // 0x200000) * 0x200000
        for irq in self.irqs:
            if irq.pd is pd:
                if irq.number is None:
                    raise InvalidSystem([f"irq {irq.source!r} of PD {pd.name!r} has no hardware interrupt "
                                         "number: give Irq(number=…) to export it to Microkit"])
                el.append(ET.Comment(f" on the host: {irq.source} "))
                ET.SubElement(el, "irq", {"irq": str(irq.number), "id": str(irq.id)})
        for cid, child in pd.children.items():
            self._render_pd(el, child, cid)


def load_program(program: str) -> type:
    """Import ``"module:Class"`` (or ``"module.Class"``) and return the Component subclass."""
    from sddf.component import Component  # the component base imports config, not system

    module_name, _, attr = program.rpartition(":") if ":" in program else program.rpartition(".")
    if not module_name:
        raise ImportError(f"program {program!r} is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(f"program {program!r}: {not_found(exc)}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ImportError(f"program {program!r}: module {module_name!r} has no {attr!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Component)):
        raise ImportError(f"program {program!r} is not a Component subclass")
    return cls


def not_found(exc: ModuleNotFoundError) -> str:
    """Which module could not be imported, and the directories that were searched for it."""
    searched = [path or os.getcwd() for path in sys.path if os.path.isdir(path or ".")]
    return f"no module named {exc.name!r} (looked in: {', '.join(searched)})"


def max_region_size() -> int:
    """The largest memory region check() allows: $SDDF_MAX_REGION_SIZE (bytes, or with a K, M, G
    or T suffix), else 16 GiB."""
    text = os.environ.get(MAX_REGION_SIZE_ENV)
    if text is None:
        return DEFAULT_MAX_REGION_SIZE
    suffix = text[-1:].upper()
    number, shift = (text[:-1], SIZE_SUFFIXES[suffix]) if suffix in SIZE_SUFFIXES else (text, 0)
    try:
        size = int(number, 0) << shift
    except ValueError:
        size = 0
    if size <= 0:
        raise InvalidSystem([f"${MAX_REGION_SIZE_ENV}={text!r} is not a positive size "
                             "(bytes, or with a K, M, G or T suffix, e.g. 16G)"])
    return size


def _image_name(program: str) -> str:
    return program.replace(":", ".").rsplit(".", 1)[-1].lower() + ".elf"


def _duplicates(what: str, names: list[Any]) -> list[str]:
    seen: set[Any] = set()
    dups = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    return [f"duplicate {what} {n!r}" for n in dups]


def _bad_name(what: str, name: object) -> list[str]:
    """``name`` unless it is 1..64 printable characters without '/' (it names files and processes)."""
    if isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable() and "/" not in name:
        return []
    return [f"{what} name {name!r} is not 1..{MAX_NAME} printable characters without '/'"]


def _check_region(mr: MemoryRegion, limit: int) -> list[str]:
    problems = _bad_name("memory region", mr.name)
    if mr.size <= 0 or mr.size % PAGE_SIZE:
        problems.append(f"memory region {mr.name!r}: size {mr.size:#x} is not a positive "
                        f"multiple of the page size {PAGE_SIZE:#x}")
    if mr.size > limit:
        problems.append(f"memory region {mr.name!r}: size {_size(mr.size)} is over the limit of "
                        f"{_size(limit)} (raise it with ${MAX_REGION_SIZE_ENV}, e.g. 64G)")
    if mr.io_addr is not None and mr.io_addr % PAGE_SIZE:
        problems.append(f"memory region {mr.name!r}: io address {mr.io_addr:#x} is not "
                        f"aligned to the page size {PAGE_SIZE:#x}")
    return problems


def _size(size: int) -> str:
    return f"{size:#x} ({size / (1 << 30):.1f} GiB)"


def _check_pd(pd: ProtectionDomain, regions: list[MemoryRegion]) -> list[str]:
    problems = _bad_name("protection domain", pd.name)
    if pd.cpu is not None and not (isinstance(pd.cpu, int) and pd.cpu >= 0):
        problems.append(f"PD {pd.name!r}: cpu {pd.cpu} is not a CPU number (≥ 0)")
    if not 0 <= pd.priority <= MAX_PRIORITY:
        problems.append(f"PD {pd.name!r}: priority {pd.priority} is outside 0..{MAX_PRIORITY}")
    if pd.fault_policy not in ("stop", "restart"):
        problems.append(f"PD {pd.name!r}: fault policy {pd.fault_policy!r} is not 'stop' or 'restart'")
    if set(pd.allow) - set(ALLOWABLE):
        problems.append(f"PD {pd.name!r}: allow {sorted(set(pd.allow) - set(ALLOWABLE))} is not among "
                        f"{sorted(ALLOWABLE)}")
    if not 0 <= pd.ledger_words <= MAX_LEDGER_WORDS:
        problems.append(f"PD {pd.name!r}: ledger_words {pd.ledger_words} must be in [0, {MAX_LEDGER_WORDS}]")
    if pd.memory_bytes is not None and pd.memory_bytes <= 0:
        problems.append(f"PD {pd.name!r}: memory_bytes {pd.memory_bytes} must be positive")
    if not (type(pd.poll_us) is int and 0 <= pd.poll_us <= MAX_POLL_US):
        problems.append(f"PD {pd.name!r}: poll_us {pd.poll_us!r} must be a whole number of µs in [0, {MAX_POLL_US}]")
    if pd.max_restarts < 0 or pd.restart_window_s <= 0:
        problems.append(f"PD {pd.name!r}: max_restarts {pd.max_restarts} must be ≥ 0 and restart_window_s "
                        f"{pd.restart_window_s} > 0")
    try:
        program = load_program(pd.program)
    except Exception as exc:  # noqa: BLE001 - any import failure is the system file's problem
        problems.append(f"PD {pd.name!r}: cannot load program: {exc}")
    else:
        problems += [f"PD {pd.name!r}: {p}" for p in _check_config(pd.config, program)]
    known = set(map(id, regions))
    for m in pd.maps:
        if id(m.region) not in known:
            problems.append(f"PD {pd.name!r}: map of unknown memory region {m.region.name!r}")
        if m.perms not in ("r", "rw"):
            problems.append(f"PD {pd.name!r}: map {m.local_name!r} has perms {m.perms!r}, not 'r' or 'rw'")
    problems += [f"PD {pd.name!r}: {p}" for p in _duplicates("map name", [m.local_name for m in pd.maps])]
    return problems


def _io_overlaps(regions: list[MemoryRegion]) -> list[str]:
    spans = sorted((mr.io_addr, mr.io_addr + mr.size, mr.name) for mr in regions if mr.io_addr is not None)
    return [f"memory regions {a!r} and {b!r}: io addresses overlap "
            f"([{s1:#x}, {e1:#x}) and [{s2:#x}, {e2:#x}))"
            for i, (s1, e1, a) in enumerate(spans) for (s2, e2, b) in spans[i + 1:] if s2 < e1]


# ---- configs: as the PD will receive them, against its program's Config ------------------------
def _check_config(config: dict[str, Any], program: type) -> list[str]:
    """What is wrong with ``config`` for ``program``: a part msgpack cannot send, or (sent) a field
    its ``Config`` or its serial grant does not have, lacks, or has of another type (without a
    Config, it reads ``self.pd.app`` as it likes)."""
    try:
        sent = _as_sent(config)
    except SEND_ERRORS:
        return [_unsendable(config, "config")]
    try:
        program.typed_config(sent, "config")
    except (ConfigError, ValueError) as exc:
        return [str(exc)]
    return []


def _as_sent(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as the PD's process receives it from the monitor (through msgpack)."""
    return PdConfig.unpack(PdConfig("", "", 0, None, -1, app=config).pack()).app


def _unsendable(value: Any, path: str) -> str:
    """The path of the innermost part of ``value`` (which msgpack cannot send) that it cannot send, and why."""
    for key, part in _parts(value):
        if _send_error(part) is not None:
            return _unsendable(part, path + key)
    return f"{path} ({type(value).__name__}) cannot be sent to the PD: {_send_error(value)}"


def _send_error(value: Any) -> Exception | None:
    try:
        _as_sent({"": value})
    except SEND_ERRORS as exc:
        return exc
    return None


def _parts(value: Any) -> Iterable[tuple[str, Any]]:
    """(path suffix, part) of each part of a dict, list, tuple or dataclass instance."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [(f".{key}", part) for key, part in value.items()]
    if isinstance(value, (list, tuple)):
        return [(f"[{i}]", part) for i, part in enumerate(value)]
    return []


