"""A PD's ledger (sddf.ledger) on its own: staged queue ends, the journal, and its redo."""
from __future__ import annotations

import pytest

from sddf import atomic
from sddf.faults import on_shared_writes
from sddf.ledger import ENTRIES_OFFSET, ENTRY, Ledger, LedgerError, committed_words, ledger_size, region_id
from sddf.net.queue import NetConsumer, NetProducer, queue_size

CAPACITY = 8
WORDS = 4


def queue() -> dict[str, memoryview]:
    return {"q": memoryview(bytearray(queue_size(CAPACITY)))}


def ledger_over(memory: bytearray, regions: dict[str, memoryview]) -> Ledger:
    return Ledger("pd", memory, WORDS, regions)


def test_a_tracked_end_publishes_only_at_commit() -> None:
    regions, memory = queue(), bytearray(ledger_size(WORDS))
    producer = NetProducer("q", regions["q"], CAPACITY)
    consumer = NetConsumer("q", regions["q"], CAPACITY)
    ledger = ledger_over(memory, regions)
    ledger.track(producer)
    assert producer.enqueue_many([(0, 1, 0), (2048, 1, 0)]) == 2
    assert consumer.length() == 0, "staged: the peer sees nothing before the commit"
    ledger.set(2, 77)
    assert committed_words(memory, WORDS) == [0] * WORDS
    ledger.commit()
    assert consumer.length() == 2 and committed_words(memory, WORDS) == [0, 0, 77, 0]
    assert atomic.load_acquire_u64(atomic.pointer(memory), 0) == 0, "the journal is cleared"


def test_a_signal_check_publishes_first() -> None:
    regions, memory = queue(), bytearray(ledger_size(WORDS))
    producer = NetProducer("q", regions["q"], CAPACITY)
    consumer = NetConsumer("q", regions["q"], CAPACITY)
    ledger_over(memory, regions).track(producer)
    assert not consumer.request_and_recheck()  # the consumer sleeps, asking to be signalled
    producer.enqueue((0, 1, 0))
    assert producer.signal_needed() and consumer.length() == 1


def test_a_journal_left_valid_is_applied_by_the_next_instance() -> None:
    """Killed between making its journal valid and applying it: the restart applies it."""
    regions, memory = queue(), bytearray(ledger_size(WORDS))
    producer = NetProducer("q", regions["q"], CAPACITY)
    ledger = ledger_over(memory, regions)
    ledger.track(producer)
    producer.enqueue_many([(0, 1, 0)] * 3)
    ledger.set(0, 5)
    assert atomic.ledger_journal(ledger._c) == 3  # the ring, the fresh mark, the word
    # ... and the process is gone before ledger_apply
    assert NetConsumer("q", regions["q"], CAPACITY).length() == 0
    again = ledger_over(memory, regions)
    assert NetConsumer("q", regions["q"], CAPACITY).length() == 3
    assert list(again.words) == [5, 0, 0, 0]


def test_fresh_until_the_first_init_commits() -> None:
    regions, memory = queue(), bytearray(ledger_size(WORDS))
    first = ledger_over(memory, regions)
    assert first.fresh and ledger_over(memory, regions).fresh, "nothing committed yet"
    first.commit()
    assert not ledger_over(memory, regions).fresh


def test_a_journal_naming_an_unmapped_region_is_refused() -> None:
    regions, memory = queue(), bytearray(ledger_size(WORDS))
    ENTRY.pack_into(memory, ENTRIES_OFFSET, region_id("elsewhere"), 0, 2, 0, 9)
    atomic.store_release_u64(atomic.pointer(memory), 0, 1)
    with pytest.raises(LedgerError, match="does not map"):
        ledger_over(memory, regions)


def test_a_component_needing_more_words_than_granted_is_told_how_many() -> None:
    ledger = ledger_over(bytearray(ledger_size(WORDS)), queue())
    with pytest.raises(LedgerError, match="needs 9 ledger words.*ledger_words=4"):
        ledger.require(9, "one per buffer")


def test_an_end_outside_the_pds_regions_cannot_be_tracked() -> None:
    ledger = ledger_over(bytearray(ledger_size(WORDS)), queue())
    with pytest.raises(LedgerError, match="not in a region"):
        ledger.track(NetProducer("stray", bytearray(queue_size(CAPACITY)), CAPACITY))


def test_under_fault_injection_a_commit_is_two_writes_the_journal_then_its_apply() -> None:
    """A commit is one C call, except under sddf.faults, where a kill must be able to fall between
    making the journal valid and applying it (what the restart's redo is for)."""
    writes: list[int] = []
    undo = on_shared_writes(lambda: writes.append(1))
    try:
        regions, memory = queue(), bytearray(ledger_size(WORDS))
        producer = NetProducer("q", regions["q"], CAPACITY)
        ledger = ledger_over(memory, regions)
        ledger.track(producer)
        producer.enqueue_many([(0, 1, 0)] * 2)
        writes.clear()
        ledger.commit()
        assert len(writes) == 2
    finally:
        undo()
    assert NetConsumer("q", regions["q"], CAPACITY).length() == 2
