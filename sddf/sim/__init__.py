"""``sddf sim``: a whole system's real components in one process under a seeded, deterministic scheduler.

FoundationDB/TigerBeetle-style: one seed drives every choice — when each notification and irq is
delivered, which pending handler runs in between two shared-memory accesses of another, when each
PD's buffered stores become visible (x86-TSO store buffers, :mod:`sddf.sim.memory`), the traffic the
simulated host sends and the faults injected — so a seed that fails fails again, event for event.
After every step the invariants of :mod:`sddf.sim.invariants` are checked; a failure carries the
seed, the step and the last events of the trace.

    from sddf.sim import Options, simulate
    result = simulate(echo.system(), seed=7, options=Options(steps=2000, faults=frozenset({"kill"})))
    assert result.failure is None, result.failure
"""
from sddf.sim.world import FAULTS, Options, Result, World
from sddf.system import SystemDescription

__all__ = ["FAULTS", "Options", "Result", "simulate"]


def simulate(sdf: SystemDescription, seed: int, options: Options = Options()) -> Result:
    """Run ``sdf`` (a fresh description: one per run) under ``seed``."""
    return World(sdf, seed, options).run()
