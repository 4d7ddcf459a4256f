"""The pending table on its own: allocation, deadlines, and telling duplicates from late answers. Pure."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icmpx._matching import SEQ_SPACE, IdentSlot, Outcome, PendingTable, Probe


class NullSink:
    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        raise AssertionError("the table never delivers")

    def abort(self, exc: BaseException) -> None:
        raise AssertionError("the table never aborts")


SINK = NullSink()


def make_table(memory: int = 65536, seed: int = 0) -> tuple[PendingTable, list[int]]:
    made: list[int] = []

    def new_ident() -> IdentSlot:
        made.append(1000 + len(made))
        return IdentSlot(made[-1])

    rng = random.Random(seed)
    table = PendingTable(new_ident, memory=memory, entropy=rng.randbytes)
    table.add_slot(IdentSlot(7))
    return table, made


def send(table: PendingTable, deadline_ns: int, timeout_ns: int = 100, signature: bytes = b"sig") -> Probe:
    slot, seq = table.allocate()
    probe = Probe("127.0.0.1", slot.ident, seq, 64, 56, signature, SINK)
    probe.deadline_ns = deadline_ns
    table.add(probe, timeout_ns)
    return probe


def test_sequences_are_random_distinct_and_skip_those_in_flight() -> None:
    # Finding: sequences grew by one per probe, so a target that saw one request knew the next ones.
    table, _ = make_table(seed=1)
    probes = [send(table, 10) for _ in range(2000)]
    seqs = [p.seq for p in probes]
    assert len(set(seqs)) == len(seqs)  # none in flight twice
    steps = [(b - a) % SEQ_SPACE for a, b in itertools.pairwise(seqs)]
    # Consecutive sequences are not a predictable step apart: the most common step is rare.
    assert max(steps.count(step) for step in set(steps)) < 10
    assert {p.key for p in probes} == {(7 << 16) | p.seq for p in probes}
    assert len(table) == 2000


def test_sequences_come_from_the_entropy_given() -> None:
    """Same entropy, same sequences; other entropy, other sequences: nothing else decides them."""
    first = [send(make_table(seed=5)[0], 10).seq for _ in range(1)]
    again = [send(make_table(seed=5)[0], 10).seq for _ in range(1)]
    tables = [make_table(seed=seed)[0] for seed in range(20)]
    assert first == again
    assert len({send(table, 10).seq for table in tables}) > 15


def test_tokens_are_drawn_from_the_entropy_in_bulk() -> None:
    calls: list[int] = []

    def entropy(n: int) -> bytes:
        calls.append(n)
        return os.urandom(n)

    table = PendingTable(lambda: IdentSlot(9), entropy=entropy)
    tokens = [table.random.token() for _ in range(1000)] + table.random.u32(500)
    assert len(set(tokens)) > 1490  # 32-bit random numbers: collisions are rare
    assert len(calls) == 1  # one draw of 4096 tokens served them all


def test_a_full_identifier_moves_on_to_a_new_one() -> None:
    table, made = make_table()
    for _ in range(SEQ_SPACE):
        send(table, 10)
    assert made == []
    extra = send(table, 10)
    assert made == [1000]
    assert extra.ident == 1000
    assert table.owns(1000)
    assert len(table) == SEQ_SPACE + 1


def test_expiry_follows_deadlines_across_timeouts() -> None:
    table, _ = make_table()
    short = send(table, deadline_ns=50, timeout_ns=10)
    long = send(table, deadline_ns=500, timeout_ns=400)
    answered = send(table, deadline_ns=60, timeout_ns=10)
    table.finish(answered, answered=True)
    assert table.next_deadline() == 50
    assert table.expire(49) == []
    assert table.expire(100) == [short]
    assert table.next_deadline() == 500
    assert table.expire(1000) == [long]
    assert table.next_deadline() is None
    assert len(table) == 0


def test_recall_tells_duplicate_late_and_unknown() -> None:
    table, _ = make_table()
    answered = send(table, 10, signature=b"abc")
    lost = send(table, 10, signature=b"xyz")
    table.finish(answered, answered=True)
    assert table.expire(100) == [lost]
    assert table.recall(answered.key, b"abc") == "duplicate"
    assert table.recall(lost.key, b"xyz") == "late"
    assert table.recall(answered.key, b"zzz") is None  # our key, not our payload
    assert table.recall(12345, b"abc") is None


@pytest.mark.parametrize("finished", [3, 4, 5, 8, 10, 13])
def test_the_memory_of_finished_probes_is_bounded(finished: int) -> None:
    table, _ = make_table(memory=4)
    probes = [send(table, 10, signature=bytes([i])) for i in range(finished)]
    for probe in probes:
        table.finish(probe, answered=True)
    remembered = [p for p in probes if table.recall(p.key, p.signature) is not None]
    # The last `memory` are always remembered, never more than twice that, and always the newest ones.
    assert 4 <= len(remembered) <= 8 or len(remembered) == finished
    assert remembered == probes[len(probes) - len(remembered) :]
    assert {table.recall(p.key, p.signature) for p in remembered} == {"duplicate"}


def test_finish_is_idempotent_and_frees_the_sequence() -> None:
    table, _ = make_table()
    probe = send(table, 10)
    table.finish(probe, answered=False)
    table.finish(probe, answered=True)
    assert len(table) == 0
    assert table.get(probe.key) is None
    assert table.recall(probe.key, probe.signature) == "late"


@pytest.mark.parametrize("memory", [1, 3])
def test_drain_empties_everything(memory: int) -> None:
    table, _ = make_table(memory=memory)
    probes = [send(table, 10) for _ in range(5)]
    assert table.drain() == probes
    assert len(table) == 0
    assert table.next_deadline() is None


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    busy=st.lists(st.integers(0, SEQ_SPACE - 1), max_size=200),
    want=st.integers(1, 60),
)
def test_allocate_run_gives_free_distinct_sequences_of_one_identifier(
    seed: int, busy: list[int], want: int
) -> None:
    table, _ = make_table(seed=seed)
    # Some sequences are in flight already.
    for seq in sorted(set(busy)):
        probe = Probe("127.0.0.1", 7, seq, 64, 56, b"x", SINK)
        probe.deadline_ns = 1000
        table.add(probe, 1000)
    in_flight = {p.key for p in table}
    slot, seqs = table.allocate_run(want)
    assert slot.ident == 7
    assert len(seqs) == want
    assert len(set(seqs)) == want
    assert not {(7 << 16) | seq for seq in seqs} & in_flight
    probes = [Probe("127.0.0.1", 7, seq, 64, 56, b"y", SINK) for seq in seqs]
    for probe in probes:
        probe.deadline_ns = 50
    table.add_run(slot, probes, 100)
    assert len(table) == len(in_flight) + want
    assert all(table.get(p.key) is p for p in probes)
    # Registered like `add`: they expire at their deadline and free their sequences.
    expired = table.expire(50)
    assert set(expired) == set(probes)
    assert len(table) == len(in_flight)


@pytest.mark.parametrize("busy", [SEQ_SPACE // 2 + 1, SEQ_SPACE - 100])
def test_allocate_run_on_a_crowded_identifier_draws_from_what_is_free(busy: int) -> None:
    table, _ = make_table(seed=3)
    for seq in range(busy):
        table.add(Probe("127.0.0.1", 7, seq, 64, 56, b"x", SINK), 100)
    slot, seqs = table.allocate_run(50)
    assert slot.ident == 7
    assert len(set(seqs)) == 50
    assert all(seq >= busy for seq in seqs)
    if busy < SEQ_SPACE - 1000:
        assert seqs != sorted(seqs)  # random draws, not the next free ones in order


def test_allocate_run_stops_where_the_identifier_is_full() -> None:
    table, made = make_table()
    for seq in range(SEQ_SPACE - 3):
        table.add(Probe("127.0.0.1", 7, seq, 64, 56, b"x", SINK), 100)
    slot, seqs = table.allocate_run(10)
    assert (slot.ident, len(seqs)) == (7, 3)
    table.add_run(slot, [Probe("127.0.0.1", 7, seq, 64, 56, b"y", SINK) for seq in seqs], 100)
    slot, seqs = table.allocate_run(10)
    assert slot.ident == made[0]  # the next identifier
    assert len(seqs) == 10
