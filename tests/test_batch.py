"""The sweep's batch path: echo requests handed to the kernel in ``sendmmsg`` batches from a worker thread,
each with a kernel send time read back from the error queue, and replies read with ``recvmmsg``.

What a user must see is the same as one packet at a time: every target answered, RTTs measured from the
kernel's send time to its receive time (not from when the batch was handed over), and nothing lost when the
kernel will not stamp or cannot take the batch path at all.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

import icmpx
from icmpx import _engine, _mmsg
from icmpx import _socket as S

pytestmark = pytest.mark.anyio


def loopback(n: int, second: int = 40) -> list[str]:
    return [f"127.{second + i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(n)]


def rtts(rows: list[icmpx.PingStats]) -> list[float]:
    return [row.avg_rtt for row in rows if row.avg_rtt is not None]


async def sweep(n: int, **options: Any) -> tuple[list[icmpx.PingStats], icmpx.EngineStats, bool]:
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(loopback(n), rate=None, **options)
        return rows, client.stats, client._engine._sender.enabled


def test_batches_are_possible_here() -> None:
    # The CI machine is Linux with glibc: if this fails, every test below checks the fallback only.
    assert _mmsg.AVAILABLE


async def test_rtts_run_from_the_kernels_send_time_not_the_batch_hand_over() -> None:
    # A batch of 512 takes the kernel milliseconds to send (for loopback it also answers each echo inside
    # the send). Timed from the hand-over, the median RTT would be about half of that.
    rows, stats, batching = await sweep(4096)
    assert batching, "the batch path was given up"
    assert [row.received for row in rows] == [1] * 4096
    assert stats.sent == stats.replies == 4096
    assert stats.malformed == stats.foreign == stats.forged == 0
    assert statistics.median(rtts(rows)) < 0.05
    assert sorted(rtts(rows))[int(0.9 * 4096)] < 0.2


async def test_without_sendmmsg_and_recvmmsg_the_sweep_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_mmsg, "AVAILABLE", False)
    rows, stats, batching = await sweep(2000)
    assert not batching
    assert [row.received for row in rows] == [1] * 2000
    assert stats.sent == stats.replies == 2000
    assert statistics.median(rtts(rows)) < 0.2
    # The reader without recvmmsg serves every other call too.
    async with icmpx.AsyncClient(timeout=2) as client:
        result = await client.probe("127.0.0.1")
        assert result.ok
        trace = await client.traceroute("127.0.0.1", max_hops=3)
        assert trace.reached


async def test_a_kernel_refusing_per_packet_stamps_falls_back_to_one_send_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kernels before 4.8 reject the SO_TIMESTAMPING control message with EINVAL before sending anything.
    def refuse(self: _mmsg.SendBatch, fd: int, start: int, stop: int) -> tuple[int, int]:
        return 0, 22

    monkeypatch.setattr(_mmsg.SendBatch, "transmit", refuse)
    rows, stats, batching = await sweep(1500)
    assert not batching
    assert [row.received for row in rows] == [1] * 1500
    assert stats.sent == stats.replies == 1500
    assert stats.pending == stats.send_errors == 0


async def test_a_path_that_never_stamps_gives_up_batches_and_still_answers_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ask for no send time (an empty control buffer): no stamp ever comes back.
    monkeypatch.setattr(_engine.S, "tx_stamp_request", lambda: b"")
    rows, stats, batching = await sweep(1500)
    assert not batching, "the missing stamps went unnoticed"
    assert [row.received for row in rows] == [1] * 1500
    assert stats.sent == stats.replies == 1500
    assert all(0 < rtt < 1000 for rtt in rtts(rows))


async def test_another_ttl_or_a_short_payload_takes_the_one_at_a_time_path() -> None:
    for options in ({"ttl": 9}, {"payload_size": 8}):
        rows, stats, batching = await sweep(700, **options)
        assert batching  # still allowed for later sweeps: these just did not use it
        assert [row.received for row in rows] == [1] * 700, options
        assert stats.sent == stats.replies == 700


async def test_ipv4_and_ipv6_mixed_in_one_sweep() -> None:
    targets = [addr for pair in zip(loopback(600), ["::1"] * 600, strict=True) for addr in pair]
    async with icmpx.AsyncClient(timeout=2) as client:
        rows = await client.multiping(targets, rate=None)
        stats = client.stats
    assert [row.received for row in rows] == [1] * 1200
    assert stats.sent == stats.replies == 1200
    assert stats.sockets == 2


def test_send_time_request_is_one_control_message() -> None:
    request = S.tx_stamp_request()
    assert len(request) == __import__("socket").CMSG_SPACE(4)
