"""Parent side: start workers with only the fds they need, wait for them without polling, report."""
from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from sddf.shm import Backend, Region
from sddf.channel import ChannelEndFds, channel_pair

TESTS_DIR = Path(__file__).resolve().parent.parent
SEED_ENV = "XPROC_SEED"


def fresh_seed() -> int:
    """A random seed for one test (``XPROC_SEED`` overrides it), printed so a failure can be replayed."""
    seed = int(os.environ.get(SEED_ENV) or random.randrange(1 << 32))
    print(f"{SEED_ENV}={seed}")
    return seed


Spec = tuple[str, dict[str, Any], Sequence[int]]  # a worker's role, parameters and inherited fds


class Shared(ExitStack):
    """The regions and channels the parent shares with workers; all closed when it exits."""

    def region(self, name: str, size: int, backend: Backend = "memfd") -> Region:
        region = Region.create(name, size, backend)
        self.callback(region.close)
        return region

    def channel(self) -> tuple[ChannelEndFds, ChannelEndFds]:
        ends = channel_pair()
        for end in ends:
            for fd in (end.recv_eventfd, end.send_eventfd, end.words_fd):
                self.callback(os.close, fd)
        return ends


def spec(role: str, params: dict[str, Any], regions: dict[str, Region],
         channel: ChannelEndFds | None = None) -> Spec:
    """A worker in ``role`` given ``regions`` (attach with :func:`xproc.link.attach`) and a channel end."""
    params = dict(params, **{key: {"fd": r.fd, "size": r.size} for key, r in regions.items()})
    fds = [r.fd for r in regions.values()]
    if channel is not None:
        params["channel"] = asdict(channel)
        fds += [channel.recv_eventfd, channel.send_eventfd, channel.words_fd]
    return role, params, fds


class WorkerFailed(AssertionError):
    """A worker exited with an error (its stderr is in the message), or they ran out of time."""


class Worker:
    """One worker process; its stdout is a pipe (small outputs only), its stderr a file."""

    def __init__(self, role: str, params: dict[str, Any], fds: Iterable[int] = ()) -> None:
        self.role = role
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "xproc", role, json.dumps(params)],
                                     pass_fds=tuple(fds), env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self.pidfd = os.pidfd_open(self.proc.pid)

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def result(self) -> Any:
        """The JSON value the worker printed last (call once it has exited)."""
        assert self.proc.stdout is not None
        lines = self.proc.stdout.read().splitlines()
        return json.loads(lines[-1])

    def report(self) -> str:
        """Who this worker was, how it ended, and the tail of its stderr."""
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")[-3000:]
        return f"--- {self.role} (pid {self.proc.pid}) exit {self.proc.returncode}\n{err}"

    def stop(self) -> None:
        """Kill the worker if it still runs, reap it and close what we hold of it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        os.close(self.pidfd)
        self._stderr.close()


def wait_for(workers: Sequence[Worker], timeout_s: float) -> None:
    """Block until every worker has exited (on its pidfd); fail at once if one fails or time runs out."""
    running = {w.pidfd: w for w in workers}
    deadline, failure = time.monotonic() + timeout_s, None
    while running and failure is None:
        remaining = deadline - time.monotonic()
        ready = select.select(list(running), [], [], remaining)[0] if remaining > 0 else []
        if not ready:
            failure = f"timed out after {timeout_s} s"
        for fd in ready:
            worker = running.pop(fd)
            if worker.proc.wait() != 0:
                failure = f"{worker.role} failed"
    if failure is None:
        return
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
    raise WorkerFailed(failure + "\n" + "\n".join(w.report() for w in workers))


def run_workers(specs: Sequence[Spec], timeout_s: float) -> list[Any]:
    """Start one worker per ``(role, params, fds)``, wait for all, return their results in order."""
    with ExitStack() as stack:
        workers = []
        for role, params, fds in specs:
            worker = Worker(role, params, fds)
            stack.callback(worker.stop)
            workers.append(worker)
        wait_for(workers, timeout_s)
        return [w.result() for w in workers]
