"""``sddf sim``: the seeded simulator finds the bugs it is for, and nothing in the bundled systems.

Each broken component (``components/sim_broken.py``) breaks one rule of sDDF's queues; the
simulator must find it from a few seeds, and must not find the correct component's twin. The
Python models of the C core must do exactly what the C does.
"""
from __future__ import annotations

import random
import sys
from typing import Any, Callable, Iterator

import pytest

from components import TESTS_DIR
from sddf import atomic
from sddf.apps.systems import echo, pingpong
from sddf.ledger import Ledger, ledger_size
from sddf.net.queue import NET_BUFFER_SIZE, BufferSpace, NetConsumer, NetProducer, queue_size
from sddf.queue.ring import QueueProtocolError
from sddf.sim import Options, Result, simulate
from sddf.sim.memory import Memory
from sddf.sim.models import Models, install
from sddf.system import SystemDescription
from sddf.tools.sim import main

SEEDS = range(6)
BROKEN = "components.sim_broken"


def pingpong_with(pong: str) -> SystemDescription:
    sdf = pingpong.system()
    sdf.pd("pong").program = pong
    return sdf


def echo_with(client0: str) -> SystemDescription:
    sdf = echo.system()
    sdf.pd("client0").program = client0
    return sdf


def first_failure(build: Callable[[], SystemDescription], seeds: range = SEEDS, **options: Any) -> Result | None:
    """The first seed's run that fails, if one does."""
    for seed in seeds:
        result = simulate(build(), seed, Options(**{"steps": 1000, **options}))
        if result.failure is not None:
            return result
    return None


# ---- the bugs it is for ---------------------------------------------------------------------------
@pytest.mark.parametrize("tso", [True, False], ids=["tso", "sequentially-consistent"])
def test_a_missing_recheck_is_found_as_a_lost_wakeup(tso: bool) -> None:
    """Without the re-check, Ping can publish between Pong's last look and its request for a signal."""
    found = first_failure(lambda: pingpong_with(f"{BROKEN}:NoRecheckPong"), tso=tso)
    assert found is not None, "no seed found the lost wake-up"
    assert "lost wake-up: queue ping<->pong active" in found.failure
    print(f"found with seed {found.seed}: {found.failure}")


def test_a_missing_fence_is_found_only_with_store_buffers() -> None:
    """Request, re-check without the fence: Ping reads the flag while Pong's request sits in its store
    buffer. Sequentially consistent memory hides it, and with the fence (the bundled Pong) it is gone."""
    found = first_failure(lambda: pingpong_with(f"{BROKEN}:NoFencePong"))
    assert found is not None and "lost wake-up" in found.failure
    print(f"found with seed {found.seed}: {found.failure}")
    assert first_failure(lambda: pingpong_with(f"{BROKEN}:NoFencePong"), tso=False) is None
    assert first_failure(lambda: pingpong_with("sddf.apps.pingpong:Pong")) is None


def test_a_consumer_that_stops_without_asking_to_be_woken_is_found_at_idle() -> None:
    """Pong takes a batch per notification and never asks for another: work waits in its queue."""
    found = first_failure(lambda: pingpong_with(f"{BROKEN}:OneBatchPong"), range(2))
    assert found is not None and "ping<->pong active holds 8 entries of work and the system is idle" in found.failure


def test_a_buffer_not_given_back_is_found_as_a_leak() -> None:
    """An echo client that keeps one rx buffer: the pool is one short after the step that kept it."""
    found = first_failure(lambda: echo_with(f"{BROKEN}:LeakyEcho"), range(2))
    assert found is not None and "pool net_rx_data: 1 missing" in found.failure
    print(f"found with seed {found.seed}: {found.failure}")


def test_a_descriptor_changed_after_it_was_published_breaks_fifo_order() -> None:
    """Ping takes from the ring something other than what Pong put there."""
    found = first_failure(lambda: pingpong_with(f"{BROKEN}:ScribblingPong"), range(2))
    assert found is not None and "FIFO order broken" in found.failure


# ---- the bundled systems ------------------------------------------------------------------------
@pytest.mark.parametrize("faults", [frozenset(), frozenset({"kill", "drop", "full"})], ids=["calm", "faults"])
def test_the_echo_system_passes(faults: frozenset[str]) -> None:
    for seed in range(3):
        result = simulate(echo.system(), seed, Options(steps=1500, faults=faults))
        assert result.failure is None, f"seed {seed}: {result.failure}\n" + "\n".join(result.trace)


@pytest.mark.parametrize("faults", [frozenset(), frozenset({"full"})], ids=["calm", "stalls"])
def test_the_pingpong_system_passes(faults: frozenset[str]) -> None:
    for seed in range(4):
        result = simulate(pingpong.system(), seed, Options(steps=2000, faults=faults))
        assert result.failure is None, f"seed {seed}: {result.failure}\n" + "\n".join(result.trace)


# ---- replay -------------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_trace() -> None:
    options = Options(steps=800, faults=frozenset({"kill", "drop", "full"}), trace=10_000)
    first, again = (simulate(echo.system(), 5, options) for _ in range(2))
    assert first.trace == again.trace and first.digest == again.digest
    assert simulate(echo.system(), 6, options).digest != first.digest


def test_the_command_reports_the_failing_seed_and_replays_it(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading a system file puts its directory there
    system = str(TESTS_DIR / "components" / "sim_lost_wakeup.py")  # a user's own component beside it
    assert main([system, "--seeds", "4", "--no-tso", "--steps", "500"]) == 1
    out = capsys.readouterr().out
    replay = next(line for line in out.splitlines() if line.startswith("replay: "))
    failed = [line for line in out.splitlines() if "FAILED" in line or line.startswith("  ")]
    assert replay.startswith(f"replay: sddf sim {system} --seed ") and replay.endswith("--steps 500 --no-tso")
    assert main(replay.split()[3:]) == 1
    again = capsys.readouterr().out
    assert [line for line in again.splitlines() if "FAILED" in line or line.startswith("  ")] == failed


def test_the_command_runs_seeds_and_reports_steps_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pingpong", "--seeds", "2", "--steps", "300", "--faults", "all"]) == 0
    out = capsys.readouterr().out
    assert "seed 0: ok" in out and "seed 1: ok" in out and "steps/s" in out


# ---- the models are the C ------------------------------------------------------------------------
class _Quiet:
    """An observer that hears nothing (no PD runs: every store goes straight to memory)."""

    def point(self) -> None: ...
    def put(self, ring: Any, index: int, data: bytes) -> None: ...
    def took(self, ring: Any, index: int, data: bytes) -> None: ...
    def refused(self, ring: Any, what: str) -> None: ...
    def flag(self, ptr: Any, off: int, value: int) -> None: ...


CAPACITY = 8


class _Pair:
    """A net queue with both ends and a ledger tracking the producer's, bound to the calls of sddf.atomic
    as they are when it is made (the C ones, or the models)."""

    def __init__(self) -> None:
        self.memory = bytearray(queue_size(CAPACITY))
        self.data = bytearray(CAPACITY * NET_BUFFER_SIZE)
        self.refusals: list[str] = []  # what the ends refused (they recover, as a component's do)
        refuse = lambda counter, message: self.refusals.append(f"{counter}: {message}")  # noqa: E731
        self.producer = NetProducer("q", self.memory, CAPACITY, refuse)
        self.consumer = NetConsumer("q", self.memory, CAPACITY, BufferSpace([(0, self.data)]), refuse)
        self.ledger_memory = bytearray(ledger_size(2))
        self.ledger = Ledger("pd", self.ledger_memory, 2, {"q": memoryview(self.memory)})
        self.ledger.track(self.producer)

    def state(self) -> tuple:
        fields = ("own", "peer", "taken", "refused", "bad_io", "bad_len", "bad_oid", "bad_position", "published")
        rings = [tuple(getattr(end._ring, f) for f in fields) for end in (self.producer, self.consumer)]
        return bytes(self.memory), bytes(self.ledger_memory), rings, list(self.refusals)


def _operations(rng: random.Random) -> Iterator[Callable[[_Pair], Any]]:
    """A seeded sequence of queue operations, good and bad, each applicable to a fresh _Pair."""
    for _ in range(300):
        op = rng.choice([0, 0, 1, 1, 2, 3, 4, 5, 6] * 4 + [7, 8])  # now and then a peer gone wrong
        descs = [(rng.choice([rng.randrange(CAPACITY) * NET_BUFFER_SIZE, rng.randrange(1 << 20)]),
                  rng.choice([0, 60, NET_BUFFER_SIZE, NET_BUFFER_SIZE + 1]), rng.choice([0, 5, 63]))
                 for _ in range(rng.randrange(1, 2 * CAPACITY))]
        count, value, word = rng.randrange(0, 2 * CAPACITY), rng.randrange(1 << 16), rng.randrange(1 << 64)
        index = rng.choice([0, 2])  # the tail or the head, as a peer gone wrong might write it
        yield [lambda p: p.producer.enqueue_many(descs), lambda p: p.consumer.dequeue_many(count),
               lambda p: p.consumer.release(len(p.consumer.peek_many(count)) // 2),
               lambda p: p.consumer.request_and_recheck(), lambda p: p.producer.signal_needed(),
               lambda p: (p.ledger.set(count % 2, word), p.ledger.commit()), lambda p: p.producer.free_slots(),
               lambda p: atomic.store_release_u16(atomic.pointer(p.memory), index, value),
               lambda p: p.producer.enqueue_many([(0, 0, 64 + count)])][op]


def _outcome(operation: Callable[[_Pair], Any], pair: _Pair) -> Any:
    try:
        return operation(pair), pair.state()
    except (QueueProtocolError, ValueError) as exc:
        return type(exc).__name__, str(exc), pair.state()


@pytest.mark.parametrize("seed", range(4))
def test_the_python_models_do_what_the_c_does(seed: int) -> None:
    """The same operations on a queue, its checks and a ledger, through the C calls and through the
    models (no PD running: stores reach memory at once), give the same results and the same bytes."""
    c_pair = _Pair()
    restore = install(Models(Memory(tso=True), _Quiet()))
    try:
        model_pair = _Pair()
        for operation in _operations(random.Random(seed)):
            model = _outcome(operation, model_pair)
            restore()
            c = _outcome(operation, c_pair)
            restore = install(Models(Memory(tso=True), _Quiet()))
            assert model == c
    finally:
        restore()
