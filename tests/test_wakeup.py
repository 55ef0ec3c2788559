"""No lost wake-up: a net free/active pair between two processes, with random pauses.

Each side pauses 0-200 µs at random before publishing, between publishing and checking the
peer's flag, before requesting a signal and re-checking (one C call, so no pause can fall
inside it), and before sleeping. With
only a few buffers both sides sleep often, so a wake-up lost by the protocol leaves both
asleep: a repetition (a run of descriptors) that does not finish in time fails the worker,
which reports where it stalled. The repetitions run in a few process pairs, many each.
"""
from __future__ import annotations

import pytest

from xproc import net
from xproc.procs import fresh_seed

PAIRS = 4
REPETITIONS = 25  # per pair of processes
DESCRIPTORS = 2_000  # per repetition
REPETITION_TIMEOUT_S = 5.0
BUFFERS = 8
PAUSE_PROBABILITY = 0.3


@pytest.mark.timeout(55)
@pytest.mark.parametrize("pair", range(PAIRS))
def test_no_lost_wakeup(pair: int) -> None:
    producer, consumer = net.run_pair(capacity=BUFFERS, count=REPETITIONS * DESCRIPTORS, max_batch=BUFFERS,
                                      segment=DESCRIPTORS, timeout_s=REPETITION_TIMEOUT_S,
                                      jitter=PAUSE_PROBABILITY, seed=fresh_seed(), limit_s=50)
    print(f"slowest repetition {max(producer['slowest_repetition_s'], consumer['slowest_repetition_s']):.2f} s; "
          f"sleeps: producer {producer['sleeps']}, consumer {consumer['sleeps']}")
