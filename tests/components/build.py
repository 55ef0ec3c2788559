"""Building blocks for the monitor tests' system files: each adds a PD with its own ``state`` region."""
from __future__ import annotations

from typing import Any

from sddf.apps.systems.pingpong import system as pingpong
from sddf.shm import PAGE_SIZE
from sddf.system import FaultPolicy, Irq, Map, MemoryRegion, ProtectionDomain, SystemDescription


def _with_state(sdf: SystemDescription, pd: ProtectionDomain) -> ProtectionDomain:
    sdf.add_pd(pd)
    pd.add_map(Map(sdf.add_mr(MemoryRegion(f"{pd.name}_state", PAGE_SIZE)), "rw", "state"))
    return pd


def add_faulty(sdf: SystemDescription, name: str, policy: FaultPolicy = "restart", max_restarts: int = 3,
               priority: int = 100, **config: Any) -> ProtectionDomain:
    """A ``components.faulty:Faulty`` PD; ``config`` is its FaultyConfig (one that leaves an
    orphan process behind is allowed to run a program)."""
    allow = ("exec",) if str(config.get("action", "")).startswith("orphan") else ()
    return _with_state(sdf, ProtectionDomain(name, "components.faulty:Faulty", priority=priority,
                                             fault_policy=policy, max_restarts=max_restarts, config=config,
                                             allow=allow))


def add_ticker(sdf: SystemDescription, name: str = "ticker", period_s: float = 0.1) -> ProtectionDomain:
    """A ``components.counter:Ticker`` PD driven by its own timerfd irq."""
    pd = _with_state(sdf, ProtectionDomain(name, "components.counter:Ticker"))
    pd.config.update(irq=sdf.add_irq(Irq(pd, "timerfd")).id, period_s=period_s)
    return pd


def add_pingpong(sdf: SystemDescription, report_every_s: float = 0.2) -> None:
    """The bundled pingpong system's PDs, regions, channel and queues (ping reporting faster)."""
    pp = pingpong()
    pp.pd("ping").config["report_every_s"] = report_every_s
    sdf.pds += pp.pds
    sdf.regions += pp.regions
    sdf.channels += pp.channels
    sdf.queues += pp.queues
