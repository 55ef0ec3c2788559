"""Cooperative threads: blocking code run inside an event-driven component (libmicrokitco's role).

A :class:`Cothread` runs its body on a thread of its own, but only while the component's event
loop waits for it: :meth:`Cothread.resume` (event loop) runs the body until it calls
:meth:`Cothread.wait` (body: "nothing to do until the next event") or returns. Exactly one of the
two threads runs at any time, so the body may use the component's state, queues and libraries
without locks, and a synchronous library (a FAT library whose disk callbacks must wait for
block responses, a client making blocking calls) runs unchanged: where it would block it waits,
the loop handles events, and resumes it. What the body raises is raised again by ``resume`` in
the event loop (a fault of the PD, never a silently dead thread).
"""
from __future__ import annotations

import threading
from typing import Callable


class Cothread:
    """``body`` run cooperatively with the thread that calls :meth:`resume`."""

    def __init__(self, name: str, body: Callable[[], None]) -> None:
        self._body = body
        self._turn = threading.Semaphore(0)  # the body may run
        self._back = threading.Semaphore(0)  # the event loop may run
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._error: BaseException | None = None
        self.finished = False

    def resume(self) -> None:
        """Run the body until it waits or returns (from the event loop); raise what it raised."""
        if self.finished:
            return
        if self._thread.ident is None:
            self._thread.start()
        else:
            self._turn.release()
        self._back.acquire()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        """Hand control back to the event loop until it resumes us (from the body)."""
        if threading.current_thread() is not self._thread:
            raise RuntimeError(f"cothread {self._thread.name!r}: wait() called from outside its body")
        self._back.release()
        self._turn.acquire()

    def _main(self) -> None:
        try:
            self._body()
        except BaseException as exc:  # handed to the event loop, which raises it
            self._error = exc
        finally:
            self.finished = True
            self._back.release()
