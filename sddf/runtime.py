"""The process a PD runs in: ``python -m sddf.runtime CONFIG_FD`` (started by the monitor only).

It reads its :class:`PdConfig`, dies with the monitor (PR_SET_PDEATHSIG), names itself after
its PD, applies priority and cpu, then runs the component. A handler exception or a fatal
signal is written to the fault pipe for the monitor, which reports it by PD name. With
``SDDF_PROFILE_DIR`` set, each PD profiles its own CPU time and writes ``<pd>.pstats`` there.
"""
from __future__ import annotations

import cProfile
import ctypes
import faulthandler
import marshal
import os
import signal
import sys
import time
import traceback
from functools import partial

from sddf import faults, sandbox
from sddf.config import PdConfig
from sddf.system import load_program

FAULT_EXIT = 70
#: set to a directory to profile every PD (CPU time, cProfile); each writes <pd>.pstats when stopped
PROFILE_ENV = "SDDF_PROFILE_DIR"
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def nice_for(priority: int) -> int:
    """Microkit priority 0..254 as a nice value: 100 → 0, higher priority → lower nice."""
    return max(-20, min(19, (100 - priority) // 8))


def _become(pd: PdConfig) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the monitor died before we could ask to follow it
        os._exit(1)
    libc.prctl(PR_SET_NAME, pd.name.encode()[:15])
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice_for(pd.priority))
    except PermissionError:
        pass  # raising priority above nice 0 needs CAP_SYS_NICE; run at the default instead
    if pd.cpu is not None:
        os.sched_setaffinity(0, {pd.cpu % os.cpu_count()})


def read_config(fd: int) -> PdConfig:
    with os.fdopen(fd, "rb") as f:
        return PdConfig.unpack(f.read())


def main(argv: list[str]) -> None:
    pd = read_config(int(argv[1]))
    _become(pd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the monitor's to handle
    os.set_inheritable(pd.fault_fd, False)  # a child this PD starts must not hold the monitor's pipe
    fault = os.fdopen(pd.fault_fd, "w", buffering=1)
    faulthandler.enable(file=fault)
    profile_dir = os.environ.get(PROFILE_ENV)
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9) if profile_dir else None
    # opened now: once confined, the PD may not open files
    profile_out = open(os.path.join(profile_dir, f"{pd.name}.pstats"), "wb") if profile_dir else None
    try:
        program = load_program(pd.program)  # imported with our privileges (it may live in a private dir)
        sandbox.harden(pd.memory_bytes)
        if pd.kill_at_write:
            faults.kill_self_at(pd.kill_at_write)
        component = program(pd)
        run = partial(component.run, partial(sandbox.confine, pd.allow))
        if profiler is not None:
            profiler.runcall(run)
        else:
            run()
    except SystemExit as done:  # stopped between handlers (SIGTERM)
        if profiler is not None and profile_out is not None:
            profiler.create_stats()
            marshal.dump(profiler.stats, profile_out)  # what Profile.dump_stats writes
            profile_out.close()
        os._exit(done.code if isinstance(done.code, int) else 0)
    except BaseException as exc:  # noqa: BLE001 - every escape is a fault to report
        fault.write(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        fault.flush()
        os._exit(FAULT_EXIT)


if __name__ == "__main__":
    main(sys.argv)
