"""Arguments at the edge: each works with memory bounded by what is in flight, or is a ValueError naming the
limit (never OverflowError or MemoryError); and long series stream their results while sending."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from contextlib import aclosing

import anyio
import pytest

import icmpx

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("timeout", [1e300, 1e12, 604800.5])
async def test_a_huge_timeout_is_a_value_error_naming_the_limit(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be at most 604800 seconds"):
        icmpx.AsyncClient(timeout=timeout)
    async with icmpx.AsyncClient() as client:
        for call in (
            lambda: client.ping("127.0.0.1", count=1, timeout=timeout),
            lambda: client.probe("127.0.0.1", timeout=timeout),
            lambda: client.traceroute("127.0.0.1", timeout=timeout),
            lambda: client.multiping(["127.0.0.1"], timeout=timeout),
        ):
            with pytest.raises(ValueError, match="at most 604800"):
                await call()
        with pytest.raises(ValueError, match="at most 604800"):
            client.mtr("127.0.0.1", timeout=timeout)
        with pytest.raises(ValueError, match="at most 604800"):
            client.iter_multiping(["127.0.0.1"], timeout=timeout)
        assert client.stats.sent == 0
    # The limit itself is accepted.
    assert icmpx.AsyncClient(timeout=604800).timeout == 604800


async def test_a_huge_interval_works() -> None:
    """An interval is only ever added to a clock: any finite one is honoured (the next echo never comes)."""
    async with icmpx.AsyncClient(timeout=1) as client:
        async with aclosing(client.iter_ping("127.0.0.1", count=3, interval=1e300)) as results:
            first = await anext(results)
        assert first.error is None
        assert client.stats.sent == 1
        assert client.stats.pending == 0


@pytest.mark.parametrize("count", [10**10, 2**63])
async def test_an_endless_series_streams_in_bounded_memory(count: int) -> None:
    """iter_ping with a count far beyond memory: results come at once, memory is what is in flight."""
    async with icmpx.AsyncClient(timeout=1) as client:
        await client.probe("127.0.0.1")  # the socket and its buffers exist before measuring
        tracemalloc.start()
        try:
            got = 0
            with anyio.fail_after(30):
                async with aclosing(client.iter_ping("127.0.0.1", count=count, interval=0)) as results:
                    async for result in results:
                        assert result.error is None
                        got += 1
                        if got == 5_000:
                            break
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.1f} MB traced for 5,000 results"
        assert client.stats.pending == 0


@pytest.mark.parametrize("count", [10**10, 2**63])
async def test_huge_counts_and_cycles_work_until_stopped(count: int) -> None:
    async with icmpx.AsyncClient(timeout=1) as client:
        with anyio.move_on_after(0.3):
            await client.ping("127.0.0.1", count=count, interval=0.01)
        with anyio.move_on_after(0.3):
            await client.multiping(["127.0.0.1", "127.0.0.2"], count=count, interval=0.01)
        async with aclosing(client.iter_multiping(["127.0.0.1"], count=count, interval=0.01)) as rows:
            with anyio.move_on_after(0.1):
                async for _ in rows:
                    pass
        reports = 0
        async with aclosing(client.mtr("127.0.0.1", cycles=count, interval=0.01, max_hops=2)) as cycles:
            async for report in cycles:
                reports += 1
                if reports == 3:
                    assert report.hops[-1].sent == 3
                    break
        assert client.stats.pending == 0
        assert client.stats.sent > 30


async def test_iter_ping_with_no_interval_yields_while_sending() -> None:
    """The first results of a fast series reach the caller long before the series is sent."""
    count = 30_000
    async with icmpx.AsyncClient(timeout=2) as client:
        await client.probe("127.0.0.1")
        before = client.stats.sent
        sent_at_first: int | None = None
        errors: list[str | None] = []
        async with aclosing(client.iter_ping("127.0.0.1", count=count, interval=0)) as results:
            async for result in results:
                if sent_at_first is None:
                    sent_at_first = client.stats.sent - before
                errors.append(result.error)
        assert errors == [None] * count
        assert sent_at_first is not None
        assert sent_at_first <= count // 10, f"first result after {sent_at_first} of {count} sends"


_EXHAUSTED = """
import os, resource, sys
import anyio, icmpx, icmpx._socket

free, backend = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

async def main():
    async with icmpx.AsyncClient(timeout=1) as client:
        # Every module a ping needs is loaded (an import needs a descriptor too) and the IPv6 socket is
        # open; the IPv4 one will open with the descriptors left, as the first socket of a process would
        # (the timestamp warm-up runs again).
        assert (await client.probe("::1")).error is None
        icmpx._socket._timestamps_ready = False
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for _ in range(free):
            os.close(held.pop())
        try:
            result = await client.probe("127.0.0.1")
            print("answered", result.error)
        except icmpx.IcmpxError as exc:
            print(type(exc).__name__, exc.errno)
        except OSError as exc:
            print("bare", type(exc).__name__, exc.errno)
        for fd in held:
            os.close(fd)

anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("free", "expected"), [(0, "SocketError 24"), (1, "answered None"), (2, "answered None")]
)
def test_descriptor_exhaustion_is_the_librarys_error(backend: str, free: int, expected: str) -> None:
    """With no descriptor left the ICMP socket cannot open: `SocketError` (EMFILE), an `IcmpxError`. With
    exactly one left, the socket opens and the timestamp warm-up (which needs a second one) gives way; it
    used to raise a bare OSError."""
    done = subprocess.run(
        [sys.executable, "-c", _EXHAUSTED, str(free), backend], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


@pytest.mark.parametrize("rate", [1e-300, 1e-3, 1e9, 1e300])
async def test_any_positive_rate_works(rate: float) -> None:
    """A rate far below one packet a second, or far above what a host can send: the first echo leaves at
    once either way (the bucket starts empty but the first slot is now), in bounded memory."""
    with anyio.fail_after(10):
        async with icmpx.AsyncClient(timeout=1, rate=rate) as client:
            assert (await client.probe("127.0.0.1")).error is None
        async with icmpx.AsyncClient(timeout=1) as client:
            rows = await client.multiping(["127.0.0.1"], rate=rate)
            assert rows[0].received == 1
