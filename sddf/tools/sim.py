"""``sddf sim SYSTEM``: a system's real components under the seeded deterministic simulator (:mod:`sddf.sim`).

Runs seeds one after another and stops at the first failure, printing the seed, the step, what
broke, the last events of the trace and the command that replays it exactly.
"""
from __future__ import annotations

import argparse
import sys
import time

from sddf.sim import FAULTS, Options, Result, simulate
from sddf.sim.devices import SimError
from sddf.system import InvalidSystem

SYSTEM_HELP = "a system file (a Python file defining system()) or the name of a bundled system (e.g. 'echo')"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sddf sim", description=(
        "Run SYSTEM's components in one process under a seeded scheduler: seeded delivery order and "
        "delays, store buffers (x86-TSO), simulated devices and injected faults, with invariants "
        "checked after every step. The same seed replays the same run, event for event."))
    p.add_argument("system", metavar="SYSTEM", help=SYSTEM_HELP)
    p.add_argument("--seed", type=int, metavar="N",
                   help="run seed N only (replay a failure); with --seeds, the first seed")
    p.add_argument("--seeds", type=int, metavar="K", help="run K seeds (default 10, from 0 or --seed)")
    p.add_argument("--steps", type=int, default=Options.steps, metavar="N",
                   help="steps of traffic and faults per seed, then as many to wind down (default %(default)s)")
    p.add_argument("--no-tso", action="store_true", help="no store buffers: every store is seen at once")
    p.add_argument("--faults", default="", metavar="LIST",
                   help=f"faults to inject, comma-separated: {', '.join(FAULTS)} or all (default: none)")
    p.add_argument("--trace", type=int, default=Options.trace, metavar="N",
                   help="events of the trace shown with a failure (default %(default)s)")
    return p


def faults(spec: str) -> frozenset[str]:
    chosen = set(FAULTS) if spec == "all" else set(filter(None, spec.split(",")))
    unknown = chosen - set(FAULTS)
    if unknown:
        raise SystemExit(f"sddf sim: unknown fault(s) {sorted(unknown)} (known: {', '.join(FAULTS)}, all)")
    return frozenset(chosen)


def replay(args: argparse.Namespace, seed: int) -> str:
    """The command that runs ``seed`` again exactly."""
    words = ["sddf sim", args.system, f"--seed {seed}", f"--steps {args.steps}"]
    words += ["--no-tso"] * args.no_tso + ([f"--faults {args.faults}"] if args.faults else [])
    return " ".join(words)


def report(result: Result, args: argparse.Namespace) -> None:
    rate = result.steps / result.seconds if result.seconds else 0.0
    if result.failure is None:
        print(f"seed {result.seed}: ok, {result.steps} steps, {rate:,.0f} steps/s, trace {result.digest[:16]}")
        return
    print(f"seed {result.seed}: FAILED at {result.failure}")
    print(f"last {len(result.trace)} events of the trace (step, virtual time, event):")
    print("\n".join("  " + line for line in result.trace))
    print(f"replay: {replay(args, result.seed)}")


def main(argv: list[str]) -> int:
    from sddf.cli import load_system  # the CLI's system loader (bundled name or file, its directory importable)

    args = parser().parse_args(argv)
    options = Options(steps=args.steps, tso=not args.no_tso, faults=faults(args.faults), trace=args.trace)
    first = args.seed or 0
    count = args.seeds if args.seeds is not None else (1 if args.seed is not None else 10)
    print(f"sddf sim: {args.system}, seeds {first}-{first + count - 1}, {args.steps} steps each, store buffers "
          f"{'on' if options.tso else 'off'}, faults: {', '.join(sorted(options.faults)) or 'none'}")
    started, steps = time.perf_counter(), 0
    for seed in range(first, first + count):
        try:
            result = simulate(load_system(args.system), seed, options)
        except (InvalidSystem, SimError) as exc:
            print(f"sddf sim: {exc}", file=sys.stderr)
            return 2
        report(result, args)
        steps += result.steps
        if result.failure is not None:
            return 1
    seconds = time.perf_counter() - started
    print(f"{count} seed(s) passed: {steps:,} steps in {seconds:.1f} s ({steps / seconds:,.0f} steps/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
