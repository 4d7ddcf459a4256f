"""Loss and RTT statistics against the ``statistics`` module (exact, slow) as the reference."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import statistics
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icmpx._models import (
    EchoReply,
    EchoRequest,
    EchoResult,
    IPHeader,
    PingStats,
    PingStatsRow,
    ReceivedPacket,
)
from icmpx._stats import RttAccumulator, loss_pct

rtts = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False, allow_infinity=False)
rtt_lists = st.lists(rtts, max_size=300)


def close(a: float | None, b: float) -> bool:
    assert a is not None
    # Welford's update is not exact; a few ulps per sample on values up to 10 s is plenty.
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-7)


def jitter_of(values: list[float]) -> float:
    """mtr's Javg: the mean absolute difference of consecutive RTTs."""
    return statistics.fmean(abs(b - a) for a, b in pairwise(values))


@settings(max_examples=1000, deadline=None)
@given(values=rtt_lists)
def test_accumulator_matches_statistics(values: list[float]) -> None:
    acc = RttAccumulator(values)
    assert acc.count == len(values)
    if not values:
        assert (acc.best, acc.worst, acc.mean, acc.stdev, acc.jitter, acc.last) == (None,) * 6
        return
    assert acc.best == min(values)
    assert acc.worst == max(values)
    assert acc.last == values[-1]
    assert close(acc.mean, statistics.mean(values))
    if len(values) == 1:
        assert (acc.stdev, acc.jitter) == (0.0, 0.0)
        return
    assert close(acc.stdev, statistics.stdev(values))
    assert close(acc.jitter, jitter_of(values))
    assert acc.stdev is not None
    assert acc.stdev >= 0.0


@settings(max_examples=300, deadline=None)
@given(values=rtt_lists)
def test_accumulator_add_equals_constructor(values: list[float]) -> None:
    one_by_one = RttAccumulator()
    for value in values:
        one_by_one.add(value)
    batch = RttAccumulator(values)
    assert (one_by_one.count, one_by_one.best, one_by_one.worst, one_by_one.last) == (
        batch.count,
        batch.best,
        batch.worst,
        batch.last,
    )
    assert (one_by_one.mean, one_by_one.stdev, one_by_one.jitter) == (
        batch.mean,
        batch.stdev,
        batch.jitter,
    )


@settings(max_examples=300, deadline=None)
@given(value=rtts, n=st.integers(2, 2000))
def test_constant_stream_has_no_spread(value: float, n: int) -> None:
    acc = RttAccumulator([value] * n)
    assert close(acc.mean, value)
    assert acc.stdev == pytest.approx(0.0, abs=1e-9)
    assert acc.jitter == 0.0


@pytest.mark.parametrize("value", [0.0, 0.042, 9999.9])
def test_single_sample(value: float) -> None:
    acc = RttAccumulator([value])
    assert (acc.count, acc.best, acc.worst, acc.mean, acc.last) == (1, value, value, value, value)
    assert acc.stdev == 0.0
    assert acc.jitter == 0.0


def test_empty() -> None:
    acc = RttAccumulator()
    assert acc.count == 0
    assert (acc.best, acc.worst, acc.mean, acc.stdev, acc.jitter, acc.last) == (None,) * 6


def test_known_values() -> None:
    acc = RttAccumulator([10.0, 12.0, 11.0, 15.0])
    assert acc.mean == pytest.approx(12.0)
    assert acc.stdev == pytest.approx(statistics.stdev([10.0, 12.0, 11.0, 15.0]))  # 2.1602...
    assert acc.jitter == pytest.approx((2.0 + 1.0 + 4.0) / 3)


@settings(max_examples=1000, deadline=None)
@given(sent=st.integers(0, 1_000_000), data=st.data())
def test_loss_pct(sent: int, data: st.DataObject) -> None:
    received = data.draw(st.integers(0, sent))
    pct = loss_pct(sent, received)
    assert 0.0 <= pct <= 100.0
    if sent == 0:
        assert pct == 0.0
    else:
        assert math.isclose(pct, 100.0 * (sent - received) / sent)
    assert loss_pct(sent, sent) == 0.0
    assert loss_pct(sent, sent + 5) == 0.0, "duplicates never make loss negative"


@pytest.mark.parametrize(
    ("sent", "received", "pct"),
    [(0, 0, 0.0), (-1, 0, 0.0), (1, 0, 100.0), (4, 3, 25.0), (3, 1, 200 / 3), (10, 10, 0.0)],
)
def test_loss_pct_examples(sent: int, received: int, pct: float) -> None:
    assert loss_pct(sent, received) == pytest.approx(pct)


# ------------------------------------------------------------------------------- PingStats

ADDR = "198.18.2.2"
ROUTER = "198.18.1.1"

# One probe's outcome: an echo reply with its RTT, a timeout, or an ICMP error that came back in RTT.
outcomes = st.one_of(
    st.tuples(st.just("reply"), rtts),
    st.tuples(st.just("timeout"), st.just(0.0)),
    st.tuples(st.sampled_from(["time-exceeded", "host-unreachable"]), rtts),
)


def echo_result(seq: int, kind: str, rtt: float) -> EchoResult:
    request = EchoRequest(addr=ADDR, ident=0xBEEF, seq=seq, ttl=64, payload_size=56)
    if kind == "timeout":
        return EchoResult(request=request, reply=None, error="timeout")
    replied = kind == "reply"
    packet = ReceivedPacket(
        ip_header=IPHeader(src_addr=ADDR if replied else ROUTER, dst_addr="198.18.1.2", ttl=64),
        icmp_type=0 if replied else 11,
        icmp_code=0,
        ident=0xBEEF,
        seq=seq,
        size=64,
    )
    reply = EchoReply(rtt=rtt, received_packet=packet)
    return EchoResult(request=request, reply=reply, error=None if replied else kind)


@settings(max_examples=500, deadline=None)
@given(probes=st.lists(outcomes, max_size=100))
def test_ping_stats_from_results(probes: list[tuple[str, float]]) -> None:
    results = [echo_result(seq, kind, rtt) for seq, (kind, rtt) in enumerate(probes)]
    replies = [rtt for kind, rtt in probes if kind == "reply"]
    for result, (kind, rtt) in zip(results, probes, strict=True):
        assert result.ok is (kind == "reply")
        assert result.rtt == (None if kind == "timeout" else rtt)
        assert result.responder == {"reply": ADDR, "timeout": None}.get(kind, ROUTER)

    stats = PingStats.from_results(results)
    assert stats.sent == len(probes)
    assert stats.received == len(replies)
    assert stats.is_alive is bool(replies)
    assert stats.error is None
    if probes:
        assert (stats.target, stats.addr) == (ADDR, ADDR)
        assert math.isclose(stats.loss_pct, 100.0 * (len(probes) - len(replies)) / len(probes))
    else:
        assert (stats.target, stats.addr, stats.loss_pct) == ("", None, 0.0)
    if not replies:
        figures = (stats.min_rtt, stats.avg_rtt, stats.max_rtt, stats.stdev_rtt, stats.jitter)
        assert figures == (None,) * 5
        return
    assert stats.min_rtt == min(replies)
    assert stats.max_rtt == max(replies)
    assert close(stats.avg_rtt, statistics.mean(replies))
    if len(replies) == 1:
        assert (stats.stdev_rtt, stats.jitter) == (0.0, 0.0)
    else:
        assert close(stats.stdev_rtt, statistics.stdev(replies))
        assert close(stats.jitter, jitter_of(replies))
    assert PingStats.from_results(results, target="example.net").target == "example.net"


def test_ping_stats_known_example() -> None:
    probes = [("reply", 10.0), ("timeout", 0.0), ("reply", 14.0), ("time-exceeded", 1.0)]
    stats = PingStats.from_results([echo_result(i, k, r) for i, (k, r) in enumerate(probes)])
    assert (stats.sent, stats.received, stats.loss_pct) == (4, 2, 50.0)
    assert (stats.min_rtt, stats.avg_rtt, stats.max_rtt) == (10.0, 12.0, 14.0)
    assert stats.stdev_rtt == pytest.approx(statistics.stdev([10.0, 14.0]))
    assert stats.jitter == pytest.approx(4.0)


def test_ping_stats_unresolved() -> None:
    stats = PingStats.unresolved("nowhere.invalid", "name does not resolve")
    assert (stats.sent, stats.received, stats.loss_pct, stats.addr) == (0, 0, 100.0, None)
    assert stats.error == "name does not resolve"
    assert not stats.is_alive


def test_ping_stats_from_accumulator() -> None:
    acc = RttAccumulator([1.0, 3.0])
    stats = PingStats.from_accumulator(target="t", addr=ADDR, sent=4, acc=acc)
    assert (stats.received, stats.loss_pct, stats.min_rtt, stats.max_rtt) == (2, 50.0, 1.0, 3.0)
    assert (stats.avg_rtt, stats.jitter) == (2.0, 2.0)


def test_fast_row_constructor_matches_the_dataclass() -> None:
    """PingStats._row (the sweep's positional fast path) builds the same frozen object as PingStats(...)."""
    fast = PingStats._row("host", "127.0.0.9", 3, 2, 100 / 3, 0.1, 0.2, 0.3, 0.1, 0.05)
    slow = PingStats(
        target="host",
        addr="127.0.0.9",
        sent=3,
        received=2,
        loss_pct=100 / 3,
        min_rtt=0.1,
        avg_rtt=0.2,
        max_rtt=0.3,
        stdev_rtt=0.1,
        jitter=0.05,
    )
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.sent = 4  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(
    sent=st.integers(0, 100),
    received=st.integers(0, 100),
    figures=st.lists(st.one_of(st.none(), rtts), min_size=6, max_size=6),
)
def test_sweep_rows_are_the_same_objects_the_constructor_makes(
    sent: int, received: int, figures: list[float | None]
) -> None:
    """Sweeps build their rows through PingStatsRow and __class__ assignment: the result must be a PingStats
    in every respect a user can see (fields, equality, hash, frozen, copy, pickle, no __dict__)."""
    loss, lo, avg, hi, sd, jit = figures
    loss = 0.0 if loss is None else loss
    fast = PingStats._row("host", "127.0.0.1", sent, received, loss, lo, avg, hi, sd, jit)
    row = PingStatsRow("host", "127.0.0.1", sent, received, loss, lo, avg, hi, sd, jit)
    row.__class__ = PingStats  # type: ignore[assignment]
    slow = PingStats(
        target="host",
        addr="127.0.0.1",
        sent=sent,
        received=received,
        loss_pct=loss,
        min_rtt=lo,
        avg_rtt=avg,
        max_rtt=hi,
        stdev_rtt=sd,
        jitter=jit,
    )
    for built in (fast, row):
        assert type(built) is PingStats
        assert built == slow
        assert hash(built) == hash(slow)
        assert repr(built) == repr(slow)
        assert dataclasses.asdict(built) == dataclasses.asdict(slow)
        assert pickle.loads(pickle.dumps(built)) == slow
        assert copy.copy(built) == slow
        assert not hasattr(built, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.sent = 5  # type: ignore[misc]
