"""multiping() and iter_multiping() on loopback: scale, accounting, statistics, pacing, closing, the CLI.

127.0.0.0/8 answers on every address, so each test sweeps as many distinct targets as it likes without
leaving the machine. The tests marked ``lab`` run the sweep inside a namespace of their own where nothing
answers (tests/netns.py), to keep probes in flight.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

import icmpx
from icmpx._matching import Outcome
from icmpx._multiping import collect, stream
from netns import icmp_socket_count

pytestmark = pytest.mark.anyio

# The documented `--json` row of `icmpx multiping` (docs: API.md), exactly.
JSON_ROW_KEYS = {
    "target",
    "addr",
    "sent",
    "received",
    "loss_pct",
    "min_ms",
    "avg_ms",
    "max_ms",
    "stdev_ms",
    "jitter_ms",
    "error",
}
RTT_FIELDS = ("min_rtt", "avg_rtt", "max_rtt", "stdev_rtt", "jitter")


def loopback(n: int, second: int = 1) -> list[str]:
    """``n`` distinct loopback addresses 127.<second+>.y.z, none ending in .0 or .255."""
    return [f"127.{second + i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(n)]


def assert_consistent(row: icmpx.PingStats) -> None:
    """The figures of one row agree with each other (whatever the RTTs were)."""
    assert 0 <= row.received <= row.sent
    assert row.loss_pct == pytest.approx(100.0 * (row.sent - row.received) / row.sent)
    if not row.received:
        assert all(getattr(row, f) is None for f in RTT_FIELDS), row
        return
    for field in RTT_FIELDS:
        assert getattr(row, field) is not None, (field, row)
    assert row.min_rtt is not None
    assert row.avg_rtt is not None
    assert row.max_rtt is not None
    assert row.stdev_rtt is not None
    assert row.jitter is not None
    assert 0 <= row.min_rtt <= row.avg_rtt <= row.max_rtt
    spread = row.max_rtt - row.min_rtt
    # A sample standard deviation never exceeds the range; neither does a mean of |consecutive differences|.
    assert 0 <= row.stdev_rtt <= spread + 1e-9
    assert 0 <= row.jitter <= spread + 1e-9
    if row.received == 1:
        assert row.min_rtt == row.avg_rtt == row.max_rtt
        assert (row.stdev_rtt, row.jitter) == (0.0, 0.0)


async def _wait_pending(client: icmpx.AsyncClient, n: int) -> None:
    with anyio.fail_after(5):
        while client.stats.pending < n:  # noqa: ASYNC110 -- polls a counter, bounded by fail_after
            await anyio.sleep(0.01)


# ------------------------------------------------------------------------------------------ scale


async def test_10000_targets_one_socket_input_order() -> None:
    targets = loopback(10_000)
    before = icmp_socket_count()
    async with icmpx.AsyncClient(timeout=2) as client:
        started = time.monotonic()
        rows = await client.multiping(targets, count=1, rate=None)
        elapsed = time.monotonic() - started
        stats = client.stats
        assert icmp_socket_count() - before == 1
    assert icmp_socket_count() == before

    assert [row.target for row in rows] == targets
    assert [row.addr for row in rows] == targets
    lost = [row.target for row in rows if row.received != 1]
    assert not lost, f"{len(lost)} of 10,000 unanswered, e.g. {lost[:5]}"
    for row in rows:
        assert (row.sent, row.loss_pct, row.error) == (1, 0.0, None)
    rtts = [row.avg_rtt for row in rows if row.avg_rtt is not None]
    assert statistics.median(rtts) < 0.2, "loopback RTT p50 should be a few microseconds"
    assert max(rtts) < 1000
    assert stats.sockets == 1
    assert stats.pending == 0
    assert stats.sent == stats.replies == 10_000
    assert stats.timeouts == stats.send_errors == 0
    assert elapsed < 10  # about 0.4 s here; a loose bound against a sweep that degrades to timeouts


@pytest.mark.matrix
async def test_1000_targets_10_echoes_every_echo_accounted_for() -> None:
    targets = loopback(1000, second=2)
    async with icmpx.AsyncClient(timeout=2) as client:
        started = time.monotonic()
        rows = await client.multiping(targets, count=10, interval=0.01, rate=None)
        elapsed = time.monotonic() - started
        stats = client.stats
    assert [row.target for row in rows] == targets
    for row in rows:
        assert (row.sent, row.received, row.loss_pct, row.error) == (10, 10, 0.0, None), row
        assert_consistent(row)
    assert stats.sent == stats.replies == 10_000
    assert stats.pending == stats.timeouts == stats.late == stats.duplicates == 0
    # Nine intervals of 0.01 s separate the first round from the last.
    assert elapsed >= 0.09


# ------------------------------------------------------------------------------------------ statistics


async def test_rows_figures_are_consistent_on_loopback() -> None:
    targets = ["127.0.0.1", "::1", "127.0.0.2", "127.8.9.10"]
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(targets, count=5, interval=0.01, rate=None)
        single = await client.multiping(targets, count=1, rate=None)
    for row in [*rows, *single]:
        assert row.received == row.sent, row
        assert_consistent(row)
    assert [r.sent for r in rows] == [5] * 4
    assert [r.sent for r in single] == [1] * 4


class FakeEngine:
    """Stands in for the engine: answers each probe at once from a script of outcomes per address.

    ``script[addr][k]`` (the k-th echo of a row) is an RTT in ms (an echo reply), ``None`` (a timeout)
    or an ICMP error name.
    """

    def __init__(self, script: dict[str, Sequence[float | str | None]]) -> None:
        self.script = script
        self.rounds: collections.Counter[int] = collections.Counter()  # echoes sent per row
        self.discarded = 0

    async def socket_kind(self, v6: bool) -> str:
        return "raw"  # no socket to open

    def _answer(self, target: Any, sink: Any, tag: int, probes: list[Any] | None) -> Any:
        probe = type("FakeProbe", (), {"tag": tag, "done": False})()
        step = self.script[target.addr][self.rounds[tag]]
        self.rounds[tag] += 1
        if probes is not None:
            probes.append(probe)
        if step is None:
            sink.deliver(probe, Outcome(rtt_ms=None, error="timeout"))
        elif isinstance(step, str):
            sink.deliver(probe, Outcome(rtt_ms=0.5, error=step, src="198.18.1.2"))
        else:
            sink.deliver(probe, Outcome(rtt_ms=step, error=None, src=target.addr))
        return probe

    def send_many(
        self,
        targets: list[Any],
        tags: list[int],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Any,
    ) -> int:
        for target, tag in zip(targets, tags, strict=True):
            self._answer(target, sink, tag, None)
        return len(targets)

    async def send_batch(
        self,
        targets: list[Any],
        tags: list[int],
        ttl: int,
        payload_size: int,
        timeout_ns: int,
        sink: Any,
        options: Any = None,
    ) -> int:
        return self.send_many(targets, tags, ttl, payload_size, timeout_ns, sink)

    paced = False

    async def send(
        self,
        target: Any,
        *,
        ttl: int,
        payload_size: int,
        timeout: float,
        sink: Any,
        tag: int = 0,
        options: Any = None,
    ) -> Any:
        return self._answer(target, sink, tag, None)

    @contextlib.contextmanager
    def watch(self, call: Any) -> Iterator[None]:
        yield

    def discard_sink(self, sink: Any) -> None:
        self.discarded += 1


SCRIPT: dict[str, Sequence[float | str | None]] = {
    "198.18.0.1": [1.0, 3.0, 2.0, 5.0, 4.0],
    "198.18.0.2": [10.0, None, 14.0, "host-unreachable", 12.0],
    "198.18.0.3": [None, None, "time-exceeded", None, None],
    "198.18.0.4": [7.5, 7.5, 7.5, 7.5, 7.5],
}


def _jitter(values: Sequence[float]) -> float:
    return statistics.mean(abs(b - a) for a, b in itertools.pairwise(values))


async def _sweep_fake(mode: str, hosts: list[str], count: int, rate: float | None) -> list[icmpx.PingStats]:
    engine = FakeEngine(SCRIPT)
    options: dict[str, Any] = {
        "count": count,
        "interval": 0.0,
        "timeout": 1.0,
        "ttl": 64,
        "payload_size": 56,
        "rate": rate,
        "family": None,
    }
    if mode == "collect":
        rows = await collect(engine, hosts, **options)  # type: ignore[arg-type]
    else:
        by_target: dict[str, list[icmpx.PingStats]] = collections.defaultdict(list)
        gen: AsyncGenerator[icmpx.PingStats, None] = stream(engine, hosts, **options)  # type: ignore[arg-type]
        async with aclosing(gen):
            async for row in gen:
                by_target[row.target].append(row)
        rows = [by_target[h].pop(0) for h in hosts]
    assert sum(engine.rounds.values()) == count * len(hosts)
    return rows


@pytest.mark.parametrize("mode", ["collect", "stream"])
@pytest.mark.parametrize("rate", [None, 1e6])
async def test_sweep_statistics_from_known_rtts(mode: str, rate: float | None) -> None:
    """Unit level: a fake engine answers with scripted RTTs, timeouts and ICMP errors; each row's figures
    are those of its echo replies (errors and timeouts count as lost), computed by the statistics module."""
    hosts = ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.1"]
    rows = await _sweep_fake(mode, hosts, 5, rate)
    assert [r.target for r in rows] == hosts
    a, b, c, d, a2 = rows
    assert a == a2
    assert (a.sent, a.received, a.loss_pct, a.error) == (5, 5, 0.0, None)
    assert (a.min_rtt, a.max_rtt) == (1.0, 5.0)
    assert a.avg_rtt == pytest.approx(3.0)
    assert a.stdev_rtt == pytest.approx(statistics.stdev([1.0, 3.0, 2.0, 5.0, 4.0]))
    assert a.jitter == pytest.approx(_jitter([1.0, 3.0, 2.0, 5.0, 4.0]))  # (2+1+3+1)/4
    assert (b.sent, b.received, b.loss_pct) == (5, 3, 40.0)
    assert (b.min_rtt, b.max_rtt) == (10.0, 14.0)
    assert b.avg_rtt == pytest.approx(12.0)
    assert b.stdev_rtt == pytest.approx(2.0)
    assert b.jitter == pytest.approx(3.0)  # |14-10| and |12-14|
    assert (c.sent, c.received, c.loss_pct, c.addr) == (5, 0, 100.0, "198.18.0.3")
    assert all(getattr(c, f) is None for f in RTT_FIELDS)
    assert (d.min_rtt, d.avg_rtt, d.max_rtt) == (7.5, 7.5, 7.5)
    assert d.stdev_rtt == pytest.approx(0.0)
    assert d.jitter == pytest.approx(0.0)
    for row in rows:
        assert_consistent(row)


@pytest.mark.parametrize("mode", ["collect", "stream"])
async def test_single_echo_rows_from_known_rtts(mode: str) -> None:
    hosts = ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    a, b, c = await _sweep_fake(mode, hosts, 1, None)
    assert (a.received, a.min_rtt, a.avg_rtt, a.max_rtt, a.stdev_rtt, a.jitter) == (
        1,
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    )
    assert (b.received, b.avg_rtt) == (1, 10.0)
    assert (c.sent, c.received, c.loss_pct, c.avg_rtt, c.error) == (1, 0, 100.0, None, None)


# ------------------------------------------------------------------------------------------ inputs


@pytest.mark.matrix
async def test_ipv4_and_ipv6_in_one_call_one_socket_per_family() -> None:
    targets = [*loopback(300, second=3), "::1", "::1", "0:0:0:0:0:0:0:1"]
    before = icmp_socket_count()
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(targets, count=2, interval=0.01, rate=None)
        assert icmp_socket_count() - before == 2
        stats = client.stats
    assert stats.sockets == 2
    assert len(stats.socket_kinds) == 2
    assert stats.sent == stats.replies == 2 * len(targets)
    assert [r.target for r in rows] == targets
    assert [r.addr for r in rows] == [*targets[:300], "::1", "::1", "::1"]  # written as the kernel does
    assert all(r.received == 2 for r in rows)


async def test_duplicated_targets_give_duplicated_rows_each_pinged() -> None:
    targets = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "::1", "127.0.0.1", "::1"]
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(targets, count=3, interval=0.01, rate=None)
        stats = client.stats
    assert [r.target for r in rows] == targets
    assert all((r.sent, r.received) == (3, 3) for r in rows)
    assert stats.sent == stats.replies == 18
    # Distinct rows, not one row repeated: each carries its own measurements.
    assert len({id(r) for r in rows}) == len(rows)


async def test_empty_input_is_an_empty_result() -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        assert await client.multiping([]) == []
        assert [r async for r in client.iter_multiping(iter(()))] == []
        assert client.stats.sent == 0


async def test_any_iterable_of_strings_is_accepted() -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping((f"127.0.0.{i}" for i in range(1, 4)), rate=None)
    assert [r.target for r in rows] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


async def test_literal_rows_that_cannot_be_pinged_get_an_error_not_an_exception() -> None:
    """Blank entries and a literal of the family not asked for: a row with `error`, nothing sent for it
    (and no resolver involved), the rest of the sweep unaffected."""
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(["", "127.0.0.1", "   ", "::1"], family=4, rate=None)
        assert client.stats.sent == 1
    blank, ok, spaces, v6 = rows
    assert (ok.received, ok.error) == (1, None)
    for row in (blank, spaces, v6):
        assert row.error
        assert (row.sent, row.received, row.addr) == (0, 0, None)
        assert all(getattr(row, f) is None for f in RTT_FIELDS)


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"count": 0}, ValueError, "count"),
    ({"count": -1}, ValueError, "count"),
    ({"count": 1.5}, TypeError, "count"),
    ({"interval": -1}, ValueError, "interval"),
    ({"interval": math.nan}, ValueError, "interval"),
    ({"rate": -5}, ValueError, "rate"),
    ({"rate": math.inf}, ValueError, "rate"),
    ({"timeout": 0}, ValueError, "timeout"),
    ({"timeout": -1}, ValueError, "timeout"),
    ({"ttl": 0}, ValueError, "ttl"),
    ({"ttl": 256}, ValueError, "ttl"),
    ({"payload_size": 65528}, ValueError, "payload_size"),
    ({"payload_size": -1}, ValueError, "payload_size"),
    ({"family": 5}, ValueError, "family"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_OPTIONS)
async def test_bad_options_raise_before_anything_is_sent(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        with pytest.raises(error, match=message):
            await client.multiping(["127.0.0.1", "::1"], **options)
        # iter_multiping checks when called, not at the first iteration.
        with pytest.raises(error, match=message):
            client.iter_multiping(["127.0.0.1"], **options)
        assert client.stats.sent == 0
        assert client.stats.sockets == 0


@pytest.mark.parametrize(
    "targets",
    ["127.0.0.1", b"127.0.0.1", ["127.0.0.1", 42], ["127.0.0.1", None], [b"127.0.0.1"], 7],
    ids=["str", "bytes", "int-element", "none-element", "bytes-element", "not-iterable"],
)
async def test_bad_targets_raise_type_error_before_anything_is_sent(targets: Any) -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        with pytest.raises(TypeError):
            await client.multiping(targets)
        with pytest.raises(TypeError):
            client.iter_multiping(targets)
        assert client.stats.sent == 0


# ------------------------------------------------------------------------------------------ iter_multiping


async def test_iter_multiping_yields_every_target_exactly_once() -> None:
    targets = [*loopback(2000, second=4), "::1", "127.0.0.1", "127.0.0.1"]
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = [row async for row in client.iter_multiping(targets, count=2, interval=0.01, rate=None)]
        assert client.stats.pending == 0
        assert client.stats.sent == client.stats.replies == 2 * len(targets)
    assert collections.Counter(r.target for r in rows) == collections.Counter(targets)
    assert all((r.sent, r.received) == (2, 2) for r in rows)


@pytest.mark.matrix
async def test_breaking_out_of_iter_multiping_stops_the_sweep() -> None:
    """Rows that need no echo (an unusable entry) come first; leaving the loop there sends nothing, and
    leaving it during a real sweep forgets that sweep's probes at once."""
    async with icmpx.AsyncClient(timeout=2) as client:
        async with aclosing(client.iter_multiping(["", *loopback(500, second=5)], rate=None)) as rows:
            async for row in rows:
                assert row.error
                break
        assert client.stats.sent == 0

        sweep = client.iter_multiping(loopback(500, second=5), count=2, interval=0.01, rate=None)
        async with aclosing(sweep) as rows:
            async for row in rows:
                assert row.received == 2
                break
        stats = client.stats
        assert stats.pending == 0
        await anyio.sleep(0.05)
        assert client.stats.sent == stats.sent, "nothing is sent once the consumer left"
        # The client is still fine for the next call.
        assert [r.received for r in await client.multiping(["127.0.0.1", "::1"], rate=None)] == [1, 1]


async def test_paced_iter_multiping_yields_while_sending() -> None:
    targets = loopback(600, second=6)
    async with icmpx.AsyncClient(timeout=2) as client:
        started = time.monotonic()
        async with aclosing(client.iter_multiping(targets, rate=1000)) as rows:
            async for _row in rows:
                first = time.monotonic() - started
                break
        sent = client.stats.sent
        assert client.stats.pending == 0
    # A tenth of a second's worth goes at once, the rest at 1 ms each: the sweep lasts 0.5 s.
    assert first < 0.25, f"first row after {first:.2f} s of a 0.5 s paced sweep"
    assert sent < len(targets)


# ------------------------------------------------------------------------------------------ pacing


async def test_rate_paces_the_sweep_and_none_or_zero_does_not() -> None:
    n = 300
    async with icmpx.AsyncClient(timeout=2) as client:
        # The token bucket may let a tenth of a second's worth go at once; the rest is spread at 1/rate.
        started = time.monotonic()
        paced = await client.multiping(loopback(n, second=7), rate=1000)
        paced_s = time.monotonic() - started
        timings = {}
        for rate in (None, 0):
            started = time.monotonic()
            rows = await client.multiping(loopback(n, second=8), rate=rate)
            timings[rate] = time.monotonic() - started
            assert all(r.received == 1 for r in rows)
    assert all(r.received == 1 for r in paced)
    assert 0.18 <= paced_s < 2.0, paced_s
    assert timings[None] < min(0.1, paced_s / 3), timings
    assert timings[0] < min(0.1, paced_s / 3), timings


async def test_client_rate_caps_multiping_too() -> None:
    async with icmpx.AsyncClient(timeout=2, rate=200) as client:
        started = time.monotonic()
        rows = await client.multiping(loopback(100, second=9), rate=None)
        elapsed = time.monotonic() - started
    assert all(r.received == 1 for r in rows)
    # 100 packets at 200 per second, less a burst of a tenth of a second's worth (20): at least 0.4 s.
    assert elapsed >= 0.35, elapsed


# ------------------------------------------------------------------------------------------ closing


async def _close_during(
    client: icmpx.AsyncClient, call: Callable[[], Any], *, ready: Callable[[], Any], bound: float = 2.0
) -> tuple[BaseException | None, float]:
    """Start ``call`` (a multiping), wait for ``ready``, close the client; what the call raised, and how
    long after the close it ended."""
    outcome: list[BaseException | None] = []
    closed_at = 0.0
    ended_at = 0.0

    async def run() -> None:
        nonlocal ended_at
        try:
            await call()
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        ended_at = time.monotonic()

    with anyio.fail_after(bound):
        async with anyio.create_task_group() as tg:
            await client.__aenter__()
            tg.start_soon(run)
            await ready()
            closed_at = time.monotonic()
            await client.aclose()
    return outcome[0], ended_at - closed_at


@pytest.mark.lab
async def test_closing_the_client_ends_a_long_sweep(quiet: str) -> None:
    client = icmpx.AsyncClient(timeout=60)
    before = icmp_socket_count()
    exc, after_close = await _close_during(
        client,
        lambda: client.multiping(loopback(1000), rate=None),
        ready=lambda: _wait_pending(client, 1000),
    )
    assert isinstance(exc, icmpx.ClientClosedError), exc
    assert after_close < 1.0
    assert client.stats.pending == 0
    assert icmp_socket_count() == before


@pytest.mark.lab
async def test_closing_the_client_ends_iter_multiping(quiet: str) -> None:
    client = icmpx.AsyncClient(timeout=60)

    async def consume() -> None:
        async for _row in client.iter_multiping([*loopback(500), "::1"], rate=None):
            pytest.fail("nothing answers in the quiet namespace")

    exc, after_close = await _close_during(client, consume, ready=lambda: _wait_pending(client, 501))
    assert isinstance(exc, icmpx.ClientClosedError), exc
    assert after_close < 1.0
    assert client.stats.pending == 0


@pytest.mark.lab
async def test_closing_the_client_ends_a_paced_sweep(quiet: str) -> None:
    client = icmpx.AsyncClient(timeout=60)
    exc, after_close = await _close_during(
        client,
        lambda: client.multiping(loopback(3000), rate=1000),
        ready=lambda: _wait_pending(client, 200),
        bound=1.4,
    )
    assert isinstance(exc, icmpx.ClientClosedError), exc
    assert after_close < 1.0


@pytest.mark.matrix
async def test_closing_the_client_between_rounds_ends_the_sweep() -> None:
    client = icmpx.AsyncClient(timeout=2)

    async def first_round_answered() -> None:
        with anyio.fail_after(2):
            while client.stats.replies < 100:  # noqa: ASYNC110 -- polls a counter, bounded
                await anyio.sleep(0.01)

    exc, after_close = await _close_during(
        client,
        lambda: client.multiping(loopback(100), count=3, interval=1.5, rate=None),
        ready=first_round_answered,
        bound=1.4,
    )
    assert isinstance(exc, icmpx.ClientClosedError), exc
    assert after_close < 1.0


@pytest.mark.lab
async def test_sweep_timeout_is_kept_beside_a_call_with_a_longer_one(quiet: str) -> None:
    async with icmpx.AsyncClient(timeout=3) as client, anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(client.multiping, ["127.0.0.1"], rate=None))  # times out in 3 s
        await _wait_pending(client, 1)
        started = time.monotonic()
        with anyio.fail_after(1.5):
            rows = await client.multiping(["127.0.0.2", "127.0.0.3"], timeout=0.5, rate=None)
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert [r.received for r in rows] == [0, 0]
    assert 0.45 <= elapsed < 0.9, elapsed


async def test_multiping_on_a_closed_client_raises() -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        pass
    with pytest.raises(icmpx.ClientClosedError):
        await client.multiping(["127.0.0.1"])
    with pytest.raises(icmpx.ClientClosedError):
        client.iter_multiping(["127.0.0.1"])


# ------------------------------------------------------------------------------------------ sync client


def test_sync_client_multiping_and_iter_multiping() -> None:
    targets = [*loopback(200, second=10), "::1"]
    with icmpx.Client(timeout=2) as client:
        rows = client.multiping(targets, count=2, interval=0.01, rate=None)
        streamed = list(client.iter_multiping(targets, rate=None))
        for _row in client.iter_multiping(targets, rate=1e6):
            break  # leaving a plain for loop early is fine too
        assert client.multiping(["127.0.0.1"], rate=None)[0].received == 1
        assert client.stats.pending == 0
    assert [r.target for r in rows] == targets
    assert all((r.sent, r.received) == (2, 2) for r in rows)
    assert sorted(r.target for r in streamed) == sorted(targets)
    assert all(r.received == 1 for r in streamed)


# ------------------------------------------------------------------------------------------ CLI


def icmpx_cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icmpx", "multiping", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_text_rows_in_input_order() -> None:
    hosts = ["127.0.0.1", "::1", "127.0.0.3", "127.0.0.1"]
    proc = icmpx_cli(*hosts, "-c", "2", "-i", "0.01")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(hosts) + 1
    for host, line in zip(hosts, lines, strict=False):
        assert line.split()[0] == host
        assert re.search(r"\b2/2/0%", line), line  # fping's xmt/rcv/%loss
    assert re.search(r"\b4 targets\b", lines[-1]), lines[-1]


def test_cli_json_document() -> None:
    hosts = ["127.0.0.1", "::1", "127.0.0.4"]
    proc = icmpx_cli(*hosts, "-c", "3", "-i", "0.01", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"hosts", "elapsed_s", "kernel_drops"}
    assert doc["kernel_drops"] == 0
    assert isinstance(doc["elapsed_s"], float)
    assert 0 < doc["elapsed_s"] < 30
    assert [row["target"] for row in doc["hosts"]] == hosts
    for row in doc["hosts"]:
        assert set(row) == JSON_ROW_KEYS
        assert row["addr"] == row["target"]
        assert (row["sent"], row["received"], row["loss_pct"], row["error"]) == (3, 3, 0.0, None)
        assert 0 <= row["min_ms"] <= row["avg_ms"] <= row["max_ms"]
        assert row["stdev_ms"] >= 0
        assert row["jitter_ms"] >= 0


def test_cli_hosts_from_stdin_with_comments_and_blank_lines() -> None:
    text = "# targets\n\n127.0.0.1\n   127.0.0.5   # trailing comment\n\n::1\n#127.0.0.9\n"
    proc = icmpx_cli("127.0.0.2", "-f", "-", "--json", "--rate", "0", stdin=text)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["hosts"]
    assert [r["target"] for r in rows] == ["127.0.0.2", "127.0.0.1", "127.0.0.5", "::1"]
    assert all(r["received"] == 1 for r in rows)


def test_cli_file_rate_0_quiet(tmp_path: Path) -> None:
    targets = loopback(3000, second=11)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("\n".join(targets) + "\n")
    started = time.monotonic()
    proc = icmpx_cli("-f", str(hosts), "--rate", "0", "-q")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, "-q prints the summary only"
    assert re.search(r"\b3000 targets, 3000 alive\b", lines[0]), lines[0]
    # At the default 1,000 per second 3,000 targets take 3 s; --rate 0 does not pace.
    assert elapsed < 2.5


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-f", "-"],
        ["127.0.0.1", "--rate=-5"],
        ["127.0.0.1", "-c", "0"],
        ["127.0.0.1", "-i", "-1"],
        ["127.0.0.1", "-W", "0"],
        ["127.0.0.1", "-4", "-6"],
        ["-f", "/nonexistent/hosts.txt"],
    ],
    ids=[
        "no-hosts",
        "empty-stdin",
        "negative-rate",
        "count-0",
        "negative-interval",
        "timeout-0",
        "both-families",
        "missing-file",
    ],
)
def test_cli_bad_arguments_exit_3(args: list[str]) -> None:
    proc = icmpx_cli(*args, stdin="" if "-" in args else None)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stderr.strip()
    assert not proc.stdout.strip()


def test_cli_row_error_without_dns_exits_2() -> None:
    """A literal of the wrong family cannot be pinged: its row says why, and the exit status is 2."""
    proc = icmpx_cli("127.0.0.1", "::1", "-4", "--json")
    assert proc.returncode == 2, proc.stderr
    first, second = json.loads(proc.stdout)["hosts"]
    assert (first["received"], first["error"]) == (1, None)
    assert second["error"]
    assert (second["sent"], second["addr"]) == (0, None)
