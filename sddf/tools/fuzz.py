"""``sddf fuzz TARGET``: coverage-guided fuzzing of everything that reads another component's bytes.

With atheris installed (``pip install 'pysddf[fuzz]'``) a target runs under libFuzzer with
Python coverage, in a child process (libFuzzer ends its process when done); without it, under
hypothesis, which generates inputs without coverage guidance but replays exactly with ``--seed``.
Every input that makes the target raise is a finding: the first input of each kind (exception
type, where it was raised, and for a broken invariant what it says) is saved to the findings
directory with its traceback beside it, and ``--replay FILE`` runs one saved input again.
The targets are in :mod:`sddf.tools.fuzz_targets`; :data:`TARGETS` names them.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import re
import signal
import sys
import sysconfig
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Callable, Iterator

from sddf.component import Component
from sddf.tools.fuzz_input import Finding
from sddf.tools import fuzz_targets as targets
from sddf.tools.fuzz_targets import TargetFunction

MAX_LEN = 4096          # bytes per input (libFuzzer's default)
LONG_INPUT = 256
DEFAULT_SECONDS = 60.0
ENGINES = ("atheris", "hypothesis")


@dataclass(frozen=True)
class Target:
    """A named target: ``make()`` builds its function (once per run)."""

    name: str
    description: str
    make: Callable[[], TargetFunction]


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("driver", "echo system's TAP driver; virt_rx and virt_tx are the fuzzer", targets.driver),
    Target("virt_rx", "echo system's virt_rx; client0 is the fuzzer, client1 must still answer", targets.virt_rx),
    Target("virt_tx", "echo system's virt_tx; client0 is the fuzzer, client1 must still answer", targets.virt_tx),
    Target("copier", "echo system's copier; its client (client1) is the fuzzer, client0 must still answer",
           targets.copier),
    Target("client0", "echo client mapping the shared rx region; driver, virt_rx and virt_tx are the fuzzer",
           targets.client0),
    Target("client1", "echo client behind a copier; its copier and virt_tx are the fuzzer", targets.client1),
    Target("timer", "timer driver's PPC (fuzzed labels and registers); client1 is the fuzzer, client2 must "
           "still be woken", targets.timer_driver),
    Target("netstack", "the echo client's netstack: frames and time in, frames out", targets.netstack),
    Target("ppc", "PPC message decoding: a request page as the callee takes it, a reply as the caller reads it",
           targets.ppc),
    Target("config", "PD configs (through msgpack) against each component's Config", targets.config),
    Target("system", "system descriptions: check() and render() raise only InvalidSystem", targets.system),
)}


def target(name: str) -> Target:
    """A bundled target by name, or ``SYSTEM:PD`` (a PD of a system file, bundled system or dotted
    module, whose writers and callers the fuzzer plays)."""
    if name in TARGETS:
        return TARGETS[name]
    if ":" in name:
        function = targets.component(name)
        system, _, pd = name.rpartition(":")
        return Target(name, f"PD {pd} of {system}", lambda: function)
    raise SystemExit(f"sddf fuzz: no target {name!r} (see sddf fuzz --list; or SYSTEM:PD for a PD of a system)")


@dataclass
class Found:
    """One kind of finding: how often it came up, and where its first input was saved."""

    kind: str
    summary: str
    input: str
    count: int = 1


class Recorder:
    """Runs a target function on each input, counting executions and saving findings."""

    def __init__(self, name: str, function: TargetFunction, directory: Path) -> None:
        self.name, self.function, self.directory = name, function, directory
        self.executions = 0
        self.found: dict[str, Found] = {}

    def __call__(self, data: bytes) -> None:
        self.executions += 1
        try:
            self.function(data)
        except Exception as exc:  # noqa: BLE001 - whatever escapes a target is a finding
            self.record(data, exc)
            _release(exc)

    def record(self, data: bytes, exc: Exception) -> None:
        kind = _kind(exc)
        if kind in self.found:
            self.found[kind].count += 1
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_file_name(self.name)}-{hashlib.sha1(data).hexdigest()[:16]}"
        path.write_bytes(data)
        path.with_name(path.name + ".txt").write_text("".join(traceback.format_exception(exc)))
        self.found[kind] = Found(kind, _summary(exc), str(path))


def _release(exc: BaseException) -> None:
    """Clear the frames of ``exc``'s traceback: what they hold (a bench, its components, their
    mappings) is then freed in order at once, not torn apart later by the cycle collector (the
    exception and a frame holding it are a cycle), which can unmap a region before a view of it."""
    traceback.clear_frames(exc.__traceback__)


def _file_name(target: str) -> str:
    """A target's name as part of a file name (``SYSTEM:PD`` may hold slashes)."""
    return re.sub(r"[^\w.-]+", "_", target)


def _kind(exc: BaseException) -> str:
    """What tells findings apart: the exception's type and where it was raised, and for a broken
    invariant (raised in one place) what it says, numbers left out."""
    frames = traceback.extract_tb(exc.__traceback__)
    kind = f"{type(exc).__name__} at {frames[-1].filename}:{frames[-1].lineno}" if frames else type(exc).__name__
    if isinstance(exc, Finding):
        kind += ": " + re.sub(r"0x[0-9a-f]+|[0-9]+", "N", str(exc))[:200]
    return kind


def _summary(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:300]}{where}"


@contextmanager
def quiet() -> Iterator[None]:
    """Components' log lines (a first refusal of each kind, start-up banners) are not the fuzzer's output."""
    log = Component.log
    Component.log = lambda self, message: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Component.log = log  # type: ignore[method-assign]


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# ---- engines ----------------------------------------------------------------------------------
class _TimeUp(BaseException):
    """The time given to a hypothesis run is over (not an Exception: hypothesis lets it through)."""


def run_hypothesis(recorder: Recorder, seconds: float | None, runs: int | None, seed: int,
                   corpus: Path | None) -> float:
    """Generate inputs with hypothesis (seeded: the same seed gives the same inputs), after the
    corpus files as explicit examples; return the seconds it ran."""
    from hypothesis import HealthCheck, Phase, example, given, settings
    from hypothesis import seed as seeded
    from hypothesis import strategies as st

    started = time.monotonic()

    def one(data: bytes) -> None:
        if seconds is not None and time.monotonic() - started > seconds:
            raise _TimeUp
        recorder(data)

    # hypothesis keeps binaries short (a few bytes on average): half the inputs are made long enough
    # to reach past the first few decisions of a target
    test = given(st.one_of(st.binary(max_size=LONG_INPUT), st.binary(min_size=LONG_INPUT, max_size=MAX_LEN)))(one)
    for data in _corpus(corpus):
        test = example(data)(test)
    test = settings(max_examples=runs or sys.maxsize, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(test)
    try:
        seeded(seed)(test)()
    except (_TimeUp, KeyboardInterrupt):  # Ctrl-C ends the run early, with its summary
        pass
    return time.monotonic() - started


def run_atheris(recorder: Recorder, seconds: float | None, runs: int | None, seed: int,
                corpus: Path | None) -> float:
    """Fuzz under libFuzzer with coverage of pysddf's code and the user's, in a child process
    (libFuzzer ends its process); the child reports back through a pipe. Return the seconds it
    fuzzed (instrumenting the code first takes a while too)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _atheris_child(recorder, seconds, runs, seed, corpus, write_end)
    os.close(write_end)
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the child stops and reports
    try:
        with os.fdopen(read_end) as pipe:
            report = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, interrupt)
    if not report:  # libFuzzer ended the child itself: a crash below Python (its artifact is saved)
        recorder.found["libFuzzer"] = Found("libFuzzer", f"the fuzzing process ended with status "
                                            f"{os.waitstatus_to_exitcode(status)}", str(recorder.directory))
        return 0.0
    state = json.loads(report)
    recorder.executions = state["executions"]
    recorder.found = {f["kind"]: Found(**f) for f in state["found"]}
    return state["seconds"]


def _atheris_child(recorder: Recorder, seconds: float | None, runs: int | None, seed: int,
                   corpus: Path | None, report: int) -> None:
    import atheris

    started: list[float] = []
    interrupted: list[bool] = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))

    def one(data: bytes) -> None:
        if not started:
            started.append(time.monotonic())
        recorder(data)
        elapsed = time.monotonic() - started[0]
        if (interrupted or (runs is not None and recorder.executions >= runs)
                or (seconds is not None and elapsed > seconds)):
            os.write(report, json.dumps({"executions": recorder.executions, "seconds": elapsed,
                                         "found": [asdict(f) for f in recorder.found.values()]}).encode())
            os._exit(0)

    recorder.directory.mkdir(parents=True, exist_ok=True)
    # inputs of any length from the start: a bench target runs tens of inputs a second, too few for
    # libFuzzer's slow growth of the length it tries
    args = [sys.argv[0], f"-seed={seed}", f"-max_len={MAX_LEN}", "-len_control=0", "-handle_int=0",
            f"-artifact_prefix={recorder.directory}/"]
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        args.append(str(corpus))
    _instrument(atheris)
    atheris.Setup(args, one)
    atheris.Fuzz()
    os._exit(1)  # not reached: libFuzzer exits by itself


def _instrument(atheris: ModuleType) -> None:
    """Coverage for pysddf's code and the user's: every function loaded, except the standard
    library's, other installed packages' and atheris's own."""
    installed = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})
    for obj in gc.get_objects():
        if (isinstance(obj, FunctionType) and not obj.__code__.co_filename.startswith(("<", *installed))
                and not (obj.__module__ or "").startswith("atheris")):
            atheris.instrument_func(obj)


def _corpus(corpus: Path | None) -> list[bytes]:
    if corpus is None or not corpus.is_dir():
        return []
    return [path.read_bytes()[:MAX_LEN] for path in sorted(corpus.iterdir()) if path.is_file()]


# ---- the command -------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sddf fuzz", description=(
        "Fuzz what reads another component's bytes: queue contents from a hostile peer, frames, "
        "PPC messages, configs and system descriptions. Exit status 1 if anything was found."))
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="a target of --list, or SYSTEM:PD (a system file, bundled system or dotted module, "
                        "and one of its PDs, whose peers the fuzzer plays)")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument("--seconds", type=float, metavar="S",
                   help=f"how long to fuzz (default {DEFAULT_SECONDS:g} s unless --runs is given)")
    p.add_argument("--runs", type=int, metavar="N", help="stop after N executions")
    p.add_argument("--seed", type=int, metavar="N", help="the random seed (printed when not given)")
    p.add_argument("--corpus", type=Path, metavar="DIR",
                   help="inputs to start from (atheris also saves the inputs that found new coverage there)")
    p.add_argument("--findings", type=Path, default=Path("fuzz-findings"), metavar="DIR",
                   help="where each finding's input and traceback are saved (default: %(default)s)")
    p.add_argument("--replay", type=Path, metavar="FILE", help="run the target once on a saved input and report")
    p.add_argument("--engine", choices=ENGINES,
                   help="atheris (coverage-guided, needs `pip install 'pysddf[fuzz]'`) or hypothesis "
                        "(default: atheris when installed)")
    return p


def list_targets() -> None:
    width = max(map(len, TARGETS))
    for t in TARGETS.values():
        print(f"{t.name:{width}}  {t.description}")
    print(f"{'SYSTEM:PD':{width}}  a PD of your own system (file, bundled or dotted module); every PD that "
          "may write a region it maps, or call it, is the fuzzer")


def replay(chosen: Target, path: Path) -> int:
    data, function = path.read_bytes(), chosen.make()
    with quiet():
        try:
            function(data)
        except Exception as exc:  # noqa: BLE001 - whatever escapes a target is a finding
            print(f"sddf fuzz {chosen.name}: {path} is a finding:")
            traceback.print_exc(file=sys.stdout)
            _release(exc)
            return 1
    print(f"sddf fuzz {chosen.name}: {path}: no finding")
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.list:
        list_targets()
        return 0
    if args.target is None:
        parser().error("a TARGET is needed (see --list)")
    chosen = target(args.target)
    if args.replay is not None:
        return replay(chosen, args.replay)
    engine = args.engine or ("atheris" if atheris_available() else "hypothesis")
    if engine == "atheris" and not atheris_available():
        raise SystemExit("sddf fuzz: atheris is not installed: pip install 'pysddf[fuzz]'")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    seconds = args.seconds if args.seconds is not None or args.runs is not None else DEFAULT_SECONDS
    print(f"sddf fuzz {chosen.name}: {engine}, seed {seed}"
          + (f", {seconds:g} s" if seconds is not None else "") + (f", {args.runs} runs" if args.runs else "")
          + ("" if engine == "atheris" or atheris_available() else
             " (atheris is not installed: inputs are not coverage-guided; pip install 'pysddf[fuzz]')"),
          flush=True)
    recorder = Recorder(chosen.name, chosen.make(), args.findings)
    with quiet():
        elapsed = (run_atheris if engine == "atheris" else run_hypothesis)(recorder, seconds, args.runs, seed, args.corpus)
    print(f"sddf fuzz {chosen.name}: {recorder.executions} executions in {elapsed:.1f} s "
          f"({recorder.executions / max(elapsed, 1e-9):.1f}/s), {len(recorder.found)} findings")
    for i, found in enumerate(recorder.found.values(), 1):
        print(f"  finding {i} ({found.count} input{'s' if found.count > 1 else ''}): {found.summary}\n"
              f"    input saved as {found.input} (traceback in {found.input}.txt); "
              f"sddf fuzz {args.target} --replay {found.input}")
    return 1 if recorder.found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
