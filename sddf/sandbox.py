"""What a PD process may do: privileges dropped before its program runs, a seccomp filter after init.

Before the component is built, a PD becomes non-dumpable (its /proc files and memory are
root's: no sibling can read them) with ``no_new_privs``, an optional cap on its private memory
(RLIMIT_DATA: shared regions do not count), and — when started as root — the unprivileged
uid/gid nobody. After ``init()``, a seccomp filter refuses (EPERM) what a component needs only
when it declares it (``ProtectionDomain.allow``): ``files`` (opening, creating, renaming and
removing paths), ``sockets`` (making new sockets) and ``exec`` (running programs); reading
another process's memory (ptrace, process_vm_*) is refused to every PD. Everything a PD works
with — regions, channels, devices — it was handed as fds before that.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal

import pyseccomp as seccomp

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534

#: what a PD may be allowed after init, and the system calls each stands for
ALLOWABLE: dict[str, tuple[str, ...]] = {
    "files": ("open", "openat", "openat2", "creat", "unlink", "unlinkat", "rename", "renameat",
              "renameat2", "mkdir", "mkdirat", "symlink", "symlinkat", "link", "linkat", "truncate"),
    "sockets": ("socket", "socketpair"),
    "exec": ("execve", "execveat"),
}
NEVER = ("ptrace", "process_vm_readv", "process_vm_writev")

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")


def harden(memory_bytes: int | None) -> None:
    """Before the program runs: non-dumpable, no new privileges, the memory cap, and nobody's
    uid if we are root (the parent-death signal, which a uid change clears, is set again)."""
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(PR_SET_DUMPABLE, 0)  # a uid change resets it too


def confine(allow: list[str]) -> None:
    """After init: refuse (EPERM) every system call in ALLOWABLE not named in ``allow``, and NEVER's."""
    unknown = set(allow) - set(ALLOWABLE)
    if unknown:
        raise ValueError(f"cannot allow {sorted(unknown)}: choose from {sorted(ALLOWABLE)}")
    refused = [*NEVER, *(call for what, calls in ALLOWABLE.items() if what not in allow for call in calls)]
    fence = seccomp.SyscallFilter(seccomp.ALLOW)
    for call in refused:
        fence.add_rule(seccomp.ERRNO(1), call)  # EPERM: the PD sees PermissionError
    fence.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # threads init started (a driver's I/O pool) are confined too
    fence.load()
