"""The ``sddf`` command: run, check, xml, graph, top, status, swap, restart, stop."""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from types import ModuleType
from typing import Any, Callable

from sddf.control import ControlError, Reply, Request, default_run_dir, only_running_system, request
from sddf.runtime import PR_SET_PDEATHSIG
from sddf.system import MAX_POLL_US, InvalidSystem, SystemDescription, not_found

SYSTEM_HELP = ("a system file (a Python file defining system() -> SystemDescription, "
               "like sdfgen's meta.py) or the name of a bundled system (e.g. 'timer', 'pingpong')")


def load_system(spec: str) -> SystemDescription:
    """Build the SystemDescription a system file (or bundled system name) describes."""
    path = system_file(spec)
    module = _bundled_system(spec) if path is None else _system_module(path)
    build = getattr(module, "system", None)
    if not callable(build):
        raise SystemExit(f"sddf: {spec} defines no system() function")
    sdf = build()
    if not isinstance(sdf, SystemDescription):
        raise SystemExit(f"sddf: {spec}: system() returned {type(sdf).__name__}, not a SystemDescription")
    return sdf


def system_file(spec: str) -> str | None:
    """The system file ``spec`` names; None if it names a bundled system (a bare name, no such file)."""
    return None if spec.isidentifier() and not os.path.isfile(spec) else spec


def _bundled_system(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"sddf.apps.systems.{name}")
    except ModuleNotFoundError:
        raise SystemExit(f"sddf: no bundled system {name!r} and no file of that name") from None


def _system_module(path: str) -> ModuleType:
    """Run a system file as a module, with the packages beside it importable (as for ``python path``)."""
    if not os.path.isfile(path):
        raise SystemExit(f"sddf: no system file {path!r}")
    if not path.endswith(".py"):
        raise SystemExit(f"sddf: {path} is not a Python system file (a .py file defining "
                         "system() -> SystemDescription, like sdfgen's meta.py)")
    if (directory := _beside(path)) not in sys.path:
        sys.path.insert(0, directory)
    module_spec = importlib.util.spec_from_file_location("sddf_system_file", path)
    assert module_spec and module_spec.loader  # a .py file always has a source loader
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise SystemExit(f"sddf: {_where(exc, path)}: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        raise SystemExit(f"sddf: {path}: {not_found(exc)}") from None
    return module


def _where(exc: SyntaxError, path: str) -> str:
    """``file:line`` of a syntax error in the system file (named as the user did) or a module it imports."""
    where = path if exc.filename in (None, os.path.abspath(path)) else exc.filename
    return where if exc.lineno is None else f"{where}:{exc.lineno}"


def _beside(path: str) -> str:
    """The directory of a system file: the packages there are importable by its PDs."""
    return os.path.dirname(os.path.abspath(path))


def _pass_on_import_path(path: str) -> None:
    """Put a system file's directory first on PYTHONPATH, for the PD processes we start."""
    inherited = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_beside(path), inherited]))


def control(system: str | None, req: Request, run_dir: str | None = None) -> tuple[Reply, list[int]]:
    """Send one request to a running system's monitor (the only one running in ``run_dir`` if
    ``system`` is None); its reply and any fds. A failure exits with its reason."""
    run_dir = default_run_dir() if run_dir is None else run_dir
    try:
        return request(run_dir, system or only_running_system(run_dir), req)
    except ControlError as exc:
        raise SystemExit(f"sddf: {exc}") from None


# ---- commands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from sddf.devices import DeviceError
    from sddf.monitor import Monitor

    if args.poll_us is not None and not 0 <= args.poll_us <= MAX_POLL_US:
        print(f"sddf: --poll-us {args.poll_us}: choose a whole number of µs in [0, {MAX_POLL_US}]", file=sys.stderr)
        return 2
    if args.netns:
        return run_in_netns(args)
    try:
        sdf = load_system(args.system)
        if (path := system_file(args.system)) is not None:
            _pass_on_import_path(path)
        monitor = Monitor(sdf, run_dir=args.run_dir, shm=args.shm, poll_us=args.poll_us)
        print(f"sddf: running system {sdf.name!r} ({len(sdf.pds)} PDs); Ctrl-C stops it", file=sys.stderr)
        return monitor.run(duration=args.duration)
    except DeviceError as exc:
        print(f"sddf: system {args.system!r} cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.remove_netns is not None:  # ours, made by `sddf run --netns`, whose process may be dead
            subprocess.run(["ip", "netns", "del", args.remove_netns], capture_output=True)


def run_in_netns(args: argparse.Namespace) -> int:
    """Run the system in a fresh network namespace, removed (with its TAPs) on exit. The system
    stops if this process dies, even by SIGKILL, and then removes a named namespace itself."""
    from sddf.tools.netns import NetNamespace, can_make_named, unshare_prefix

    inner = [sys.executable, "-m", "sddf.cli", "run", args.system, "--shm", args.shm, "--run-dir", args.run_dir]
    if args.duration is not None:
        inner += ["--duration", str(args.duration)]
    if args.poll_us is not None:
        inner += ["--poll-us", str(args.poll_us)]
    if not can_make_named():
        print("sddf: not root: running in an unprivileged user+network namespace (unshare -rn); "
              "enter it with `nsenter -U -n -t <monitor pid> --preserve-credentials`", file=sys.stderr)
        return run_forwarding_stops(unshare_prefix() + inner)
    with NetNamespace(args.system.rsplit("/", 1)[-1].removesuffix(".py")) as ns:
        print(f"sddf: network namespace {ns.name}; reach the system with "
              f"`ip netns exec {ns.name} ping 10.0.0.2` (the TAP's host side is 10.0.0.1)", file=sys.stderr)
        return run_forwarding_stops(ns.exec_prefix() + inner + ["--remove-netns", ns.name])


def run_forwarding_stops(cmd: list[str]) -> int:
    """Run ``cmd`` to its end, passing SIGINT/SIGTERM/SIGHUP on to it (its monitor stops the
    system), so that we outlive it and can remove what we created for it. Should we die first,
    it gets SIGTERM."""
    child = subprocess.Popen(cmd, preexec_fn=_dies_with(os.getpid()))
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda signum, _frame: child.send_signal(signum)) for s in stops}
    try:
        return child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _dies_with(parent: int) -> Callable[[], None]:
    """A Popen ``preexec_fn``: the child gets SIGTERM when ``parent`` dies (PR_SET_PDEATHSIG; kept
    across the exec of ``ip netns exec``/``unshare`` and of the python they exec in turn)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before we asked
            os._exit(1)
    return arm


def cmd_demo(args: argparse.Namespace) -> int:
    from sddf.tools.demo import main as demo

    return demo(inside=args.inside)


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    sdf = load_system(args.system)
    sdf.check()
    table = Table(title=f"system {sdf.name!r}: valid")
    for col in ("PD", "program", "prio", "maps", "channels", "irqs"):
        table.add_column(col)
    for pd in sdf.pds:
        chans = [f"{c.pd_a_id}→{c.pd_b.name}{' (pp)' if c.pp_a else ''}" for c in sdf.channels if c.pd_a is pd]
        chans += [f"{c.pd_b_id}→{c.pd_a.name}{' (pp)' if c.pp_b else ''}" for c in sdf.channels if c.pd_b is pd]
        irqs = [f"{i.id}:{i.source}" for i in sdf.irqs if i.pd is pd]
        maps = [f"{m.local_name}({m.perms})" for m in pd.maps]
        table.add_row(pd.name, pd.program, str(pd.priority), " ".join(maps), " ".join(chans), " ".join(irqs))
    console = Console()
    console.print(table)
    total = sum(mr.size for mr in sdf.regions)
    console.print(f"{len(sdf.regions)} memory regions ({total // 1024} KiB), "
                  f"{len(sdf.channels)} channels, {len(sdf.irqs)} irqs, {len(sdf.queues)} queues")
    return 0


def cmd_xml(args: argparse.Namespace) -> int:
    sdf = load_system(args.system)
    sdf.check()
    _write(args.output, sdf.render())
    return 0


def graph_dot(sdf: SystemDescription) -> str:
    """The component graph in Graphviz DOT: PDs, shared regions, channels (PPC drawn bold)."""
    lines = [f'digraph "{sdf.name}" {{', "  rankdir=LR; node [fontname=Helvetica];"]
    for pd in sdf.pds:
        lines.append(f'  "{pd.name}" [shape=box, style=rounded, label="{pd.name}\\nprio {pd.priority}"];')
    for mr in sdf.regions:
        lines.append(f'  "mr:{mr.name}" [shape=note, fontsize=9, label="{mr.name}\\n{mr.size // 1024} KiB"];')
        for pd in sdf.pds:
            for m in pd.maps:
                if m.region is mr:
                    lines.append(f'  "{pd.name}" -> "mr:{mr.name}" [dir=none, style=dashed, label="{m.perms}"];')
    for ch in sdf.channels:
        style = "bold" if ch.pp_a or ch.pp_b else "solid"
        arrow = "forward" if ch.pp_a else "back" if ch.pp_b else "both"
        lines.append(f'  "{ch.pd_a.name}" -> "{ch.pd_b.name}" [dir={arrow}, style={style}, '
                     f'label="{ch.pd_a_id}:{ch.pd_b_id}{" ppc" if ch.pp_a or ch.pp_b else ""}"];')
    for irq in sdf.irqs:
        lines.append(f'  "irq:{irq.source}" [shape=diamond, label="{irq.source}"];')
        lines.append(f'  "irq:{irq.source}" -> "{irq.pd.name}" [label="irq {irq.id}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def cmd_graph(args: argparse.Namespace) -> int:
    sdf = load_system(args.system)
    dot = graph_dot(sdf)
    out = args.output
    if out and out.endswith((".png", ".svg")):
        if shutil.which("dot") is None:
            raise SystemExit("sddf: writing PNG/SVG needs Graphviz's `dot` (apt-get install graphviz); "
                             "use -o FILE.dot or no -o for DOT text")
        subprocess.run(["dot", f"-T{out.rsplit('.', 1)[1]}", "-o", out], input=dot.encode(), check=True)
        print(f"sddf: wrote {out}", file=sys.stderr)
    else:
        _write(out, dot)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply, _ = control(args.system_name, {"cmd": "status"}, args.run_dir)
    for pd in reply["pds"]:
        fault = f"  last fault: {pd['last_fault']}" if pd["last_fault"] else ""
        print(f"{pd['name']:16} {pd['state']:10} pid {pd['pid']!s:8} restarts {pd['restarts']}  "
              f"wake-ups {pd.get('wakeups', 0)} ({pd.get('unproductive_wakeups', 0)} found no work)  "
              f"{pd['program']}{fault}")
    return 0


def cmd_counters(args: argparse.Namespace) -> int:
    reply, _ = control(args.system_name, {"cmd": "counters", "fresh": True}, args.run_dir)
    for pd, counters in reply["counters"].items():
        shown = ", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "-"
        stale = reply["stale"].get(pd)
        print(f"{pd:16} {shown}" + (f"  (stale: {stale})" if stale else ""))
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    control(args.system_name, {"cmd": "swap", "pd": args.pd, "program": args.program}, args.run_dir)
    print(f"sddf: PD {args.pd} now runs {args.program}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    control(args.system_name, {"cmd": "restart", "pd": args.pd, "kill_at_write": args.kill_at_write}, args.run_dir)
    armed = f" (it will be killed before its write {args.kill_at_write} to shared memory)" if args.kill_at_write else ""
    print(f"sddf: PD {args.pd} restarted{armed}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    control(args.system_name, {"cmd": "stop"}, args.run_dir)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from sddf.tools.top import top

    return top(lambda req: control(args.system_name, req, args.run_dir), interval=args.interval, once=args.once)


def cmd_audit(args: argparse.Namespace) -> int:
    from sddf.tools.audit import audit

    return audit(lambda req: control(args.system_name, req, args.run_dir), settle_s=args.settle)


def _write(path: str | None, text: str) -> None:
    if path:
        with open(path, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sddf", description="Run and inspect sDDF/Microkit-style systems of components as host processes.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_dir = default_run_dir()

    def add_run_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--run-dir", default=run_dir, metavar="DIR",
                        help="where control sockets live (default: $SDDF_RUN_DIR or /tmp/sddf-<uid>: %(default)s)")

    def add(name: str, func: Any, help_text: str, system: bool = False, running: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=func)
        if system:
            sp.add_argument("system", metavar="SYSTEM", help=SYSTEM_HELP)
        if running:
            sp.add_argument("--system", dest="system_name", metavar="NAME",
                            help="which running system (needed only when several run)")
            add_run_dir(sp)
        return sp

    run = add("run", cmd_run, "start every component of SYSTEM as its own process and watch them "
              "(Ctrl-C stops everything and cleans up)", system=True)
    add_run_dir(run)
    run.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--poll-us", type=int, metavar="N", default=None,
                     help="every PD spins up to N µs before each sleep (a bounded poll, for machines with a "
                          "core per PD: it trades a busy core for the kernel's wake-up; default: each PD's "
                          "poll_us, 0)")
    run.add_argument("--netns", action="store_true",
                     help="run inside a fresh network namespace (for TAP devices), removed on exit; if this "
                          "command is killed, even by SIGKILL, the system stops and removes the namespace; "
                          "one killed during start-up may leave it: remove it with `ip netns del NAME`")
    run.add_argument("--remove-netns", metavar="NAME", help=argparse.SUPPRESS)  # passed by --netns to its inner run
    run.add_argument("--shm", choices=("memfd", "posix"), default="memfd",
                     help="memory regions as memfds (default), or as named POSIX regions "
                          "/sddf-<monitor pid>-<region> that outside tools can open by name "
                          "(as can any process of your uid); their names are printed at start")
    demo = add("demo", cmd_demo, "run the echo system in its own network namespace, ping and UDP/TCP-echo "
               "both clients, print a summary and stop")
    demo.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    add("check", cmd_check, "validate SYSTEM and print a summary table", system=True)
    xml = add("xml", cmd_xml, "print the equivalent Microkit system XML of SYSTEM", system=True)
    xml.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    graph = add("graph", cmd_graph, "draw SYSTEM's components, regions and channels "
                "(Graphviz DOT; PNG/SVG when `dot` is installed)", system=True)
    graph.add_argument("-o", "--output", metavar="FILE", help="FILE.dot, FILE.png or FILE.svg (default: DOT on stdout)")
    top = add("top", cmd_top, "live view of a running system: per-PD state, CPU and restarts, "
              "per-queue occupancy", running=True)
    top.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh period")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    add("status", cmd_status, "print the state of each PD of a running system", running=True)
    audit = add("audit", cmd_audit, "check that every buffer of a running system is in exactly one place "
                "(per pool: missing, doubled, foreign); exit status 1 if not", running=True)
    audit.add_argument("--settle", type=float, default=2.0, metavar="S",
                       help="look again for up to S seconds while buffers are in flight (default %(default)s)")
    add("counters", cmd_counters, "print each PD's counters (frames, drops, refused descriptors…) "
        "of a running system", running=True)
    swap = add("swap", cmd_swap, "replace a running PD's program by another of the same component "
               "kind (same regions and channels; the old process is stopped first)", running=True)
    swap.add_argument("pd", metavar="PD", help="protection domain name")
    swap.add_argument("program", metavar="PROGRAM", help="'package.module:Class' of the new program")
    restart = add("restart", cmd_restart, "restart one PD of a running system", running=True)
    restart.add_argument("pd", metavar="PD", help="protection domain name")
    restart.add_argument("--kill-at-write", type=int, default=0, metavar="N",
                         help="fault injection: the new instance SIGKILLs itself just before its N-th write "
                              "to shared memory (a queue move, signal flag, ledger step or notify)")
    add("stop", cmd_stop, "stop a running system", running=True)
    for name, (_module, help_text) in TOOLS.items():  # listed here; their own parsers take the rest
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return p


#: commands whose arguments their own module parses: name -> (module with main(argv), help)
TOOLS = {
    "sim": ("sddf.tools.sim", "run SYSTEM's components in one process under a seeded scheduler (store buffers, "
            "simulated devices, injected faults, invariants after every step); replay a failure by its seed"),
    "fuzz": ("sddf.tools.fuzz", "fuzz whatever reads another component's bytes (components' queues, the netstack, "
             "PPC decoding, the system loader, a component of yours); --list names the targets"),
    "blk": ("sddf.tools.blk", "make disk images (MBR or GPT, FAT-formatted partitions) for the block system and "
            "look inside them on the host: mkimage, info, ls, cat, put"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:]))
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidSystem as exc:
        print(f"sddf: {exc}", file=sys.stderr)
        return 2
    except ControlError as exc:  # e.g. `sddf run` of a system that is already running
        print(f"sddf: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
