"""The engine and clients on loopback: probe(), ping(), concurrency, forgery, cancellation, closing."""

from __future__ import annotations

import functools
import os
import random
import socket
import struct
import subprocess
import sys
import time

import anyio
import pytest

import icmpx
from icmpx import _socket, _wire
from netns import icmp_socket_count

pytestmark = pytest.mark.anyio


def test_seed_sync_example() -> None:
    """The seed's example, unchanged: the fields it prints are there and mean what they say."""
    with icmpx.Client(timeout=1.5) as client:
        resultados = client.ping("127.0.0.1", count=3)
        assert len(resultados) == 3
        for resultado in resultados:
            assert resultado.request.addr == "127.0.0.1"
            assert resultado.reply is not None
            assert resultado.reply.received_packet.ip_header.src_addr == "127.0.0.1"
            assert 0 <= resultado.reply.rtt < 100
            assert resultado.error is None
        # One identifier, distinct wire sequences (random: a target cannot predict the next one).
        seqs = [r.request.seq for r in resultados]
        assert len(set(seqs)) == 3
        assert len({r.request.ident for r in resultados}) == 1


@pytest.mark.matrix
@pytest.mark.parametrize(("host", "family"), [("127.0.0.1", 4), ("::1", 6)])
async def test_ping_loopback(host: str, family: int) -> None:
    async with icmpx.AsyncClient(timeout=1) as client:
        results = await client.ping(host, count=5, interval=0.01)
        assert [r.error for r in results] == [None] * 5
        for r in results:
            assert r.reply is not None
            packet = r.reply.received_packet
            assert packet.ip_header.src_addr == host
            assert packet.icmp_type == (0 if family == 4 else 129)
            assert packet.ip_header.ttl == 64
            assert packet.size == 64
            assert r.request.payload_size == 56
            assert r.request.ttl == 64
        stats = client.stats
        assert stats.sent == stats.replies == 5
        assert stats.sockets == 1


async def test_probe_result_and_payload_sizes() -> None:
    async with icmpx.AsyncClient(timeout=1) as client:
        for size in (0, 1, 13, 14, 1472, 8000):
            result = await client.probe("127.0.0.1", payload_size=size)
            assert result.error is None, size
            assert result.reply is not None
            assert result.reply.received_packet.size == size + 8


@pytest.mark.matrix
async def test_1000_concurrent_pings_share_one_socket() -> None:
    targets = [f"127.{i // 250 + 1}.{i % 250}.{random.randrange(1, 255)}" for i in range(1000)]
    before = icmp_socket_count()
    results: dict[str, list[icmpx.EchoResult]] = {}
    peak_sockets = 0

    async with icmpx.AsyncClient(timeout=2) as client:

        async def one(addr: str) -> None:
            nonlocal peak_sockets
            results[addr] = await client.ping(addr, count=2, interval=0.05)
            peak_sockets = max(peak_sockets, icmp_socket_count() - before)

        async with anyio.create_task_group() as tg:
            for addr in targets:
                tg.start_soon(one, addr)
        assert client.stats.sockets == 1
        # (foreign packets are other programs' pings, which a raw socket sees too: not counted here)
        assert client.stats.forged == 0
        assert client.stats.malformed == 0

    assert peak_sockets == 1
    assert icmp_socket_count() == before
    assert len(results) == len(set(targets))
    for addr, rs in results.items():
        assert [r.error for r in rs] == [None, None]
        assert all(r.responder == addr for r in rs)


def _timestampns_only(sock: socket.socket) -> bool:
    """A kernel without SO_TIMESTAMPING (before 2.6.30, or one refusing it): receive times only."""
    sock.setsockopt(socket.SOL_SOCKET, _socket.SO_TIMESTAMPNS, 1)
    return False


@pytest.mark.parametrize("stamping", ["SO_TIMESTAMPING", "SO_TIMESTAMPNS"])
@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_rtt_stays_honest_when_the_loop_is_busy(
    monkeypatch: pytest.MonkeyPatch, stamping: str, target: str
) -> None:
    """RTT comes from the kernel's receive timestamp, not from when the loop got round to reading: with
    either timestamp option (the reader's fast path recognises each by its control message header), for
    ping's single sends and a sweep's, IPv4 and IPv6."""
    if stamping == "SO_TIMESTAMPNS":
        monkeypatch.setattr(_socket, "_set_timestamps", _timestampns_only)
    stop = anyio.Event()
    blocks = 0

    async def hog() -> None:
        nonlocal blocks
        while not stop.is_set():
            time.sleep(0.05)  # noqa: ASYNC251 -- deliberately blocks the loop; not a synchronisation sleep
            blocks += 1
            await anyio.lowlevel.checkpoint()

    async with icmpx.AsyncClient(timeout=2) as client, anyio.create_task_group() as tg:
        tg.start_soon(hog)
        results = await client.ping(target, count=100, interval=0.005)
        rows = await client.multiping([target] * 50, rate=500)
        stop.set()
        assert client._engine._families[":" in target].channels[0].icmp.tx_stamps is (
            stamping == "SO_TIMESTAMPING"
        )
    assert blocks >= 5, "the hog did not block the loop during the pings: the test proves nothing"
    assert all(r.error is None for r in results)
    rtts = [r.rtt for r in results if r.rtt is not None]
    assert max(rtts) < 1.0, rtts
    assert [row.received for row in rows] == [1] * 50
    assert max(row.max_rtt or 0.0 for row in rows) < 1.0, rows


@pytest.mark.matrix
async def test_forged_truncated_and_random_packets_are_dropped_and_counted() -> None:
    """Replies with our identifier and future sequences but a wrong cookie, runts and noise."""
    injector = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rng = random.Random(7)
    async with icmpx.AsyncClient(timeout=1) as client:
        first = await client.probe("127.0.0.1")
        ident, seq = first.request.ident, first.request.seq

        def inject() -> None:
            for k in range(1, 41):
                bad_payload = _wire.build_payload(os.urandom(8), rng.getrandbits(32), 56)
                forged = bytearray(
                    _wire.build_echo_request(
                        v6=False, ident=ident, seq=(seq + k) % 65536, payload=bad_payload
                    )
                )
                forged[0] = 0  # echo reply
                forged[2:4] = b"\0\0"
                forged[2:4] = struct.pack("!H", _wire.checksum(forged))
                injector.sendto(bytes(forged), ("127.0.0.1", 0))
                # A Time Exceeded whose quote stops inside the IP header (the kernel itself drops ICMP
                # shorter than 8 bytes, so truncation is tested where it can reach us: in the quote).
                cut = bytearray([11, 0, 0, 0, 0, 0, 0, 0, 0x45]) + os.urandom(9)
                cut[2:4] = struct.pack("!H", _wire.checksum(cut))
                injector.sendto(bytes(cut), ("127.0.0.1", 0))
                # An "echo reply" of random bytes: another identifier (the kernel's filter keeps it out) or,
                # rarely, ours with a wrong checksum.
                noise = bytes([0]) + os.urandom(rng.randrange(7, 64))
                injector.sendto(noise, ("127.0.0.1", 0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, inject)
            results = await client.ping("127.0.0.1", count=40, interval=0.002)
        # Let the reader take in whatever the injector sent last: wait for the counters, with a bound.
        with anyio.fail_after(2):
            while client.stats.forged + client.stats.late < 40 or client.stats.malformed < 40:
                await client.probe("127.0.0.1")
        stats = client.stats
    injector.close()
    assert [r.error for r in results] == [None] * 40
    assert all(r.responder == "127.0.0.1" and r.rtt is not None and r.rtt < 50 for r in results)
    assert stats.forged + stats.late >= 40
    assert stats.malformed >= 40
    assert stats.replies == stats.sent


@pytest.mark.matrix
@pytest.mark.lab
async def test_timeout_is_a_result_not_an_exception(quiet: str) -> None:
    async with icmpx.AsyncClient(timeout=0.3) as client:
        started = time.monotonic()
        result = await client.probe("127.0.0.1")
        elapsed = time.monotonic() - started
        assert result.error == "timeout"
        assert result.reply is None
        assert result.rtt is None
        assert 0.29 <= elapsed < 1.0
        assert client.stats.timeouts == 1
        assert client.stats.pending == 0


async def _wait_pending(client: icmpx.AsyncClient, n: int) -> None:
    with anyio.fail_after(5):
        while client.stats.pending < n:  # noqa: ASYNC110 -- polls a counter, bounded by fail_after
            await anyio.sleep(0.01)


@pytest.mark.lab
async def test_cancelling_500_in_flight_pings(quiet: str) -> None:
    async with icmpx.AsyncClient(timeout=60) as client:
        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(functools.partial(client.ping, f"127.0.{i // 250}.{i % 250 + 1}", count=1))
            await _wait_pending(client, 500)
            started = time.monotonic()
            tg.cancel_scope.cancel()
        assert time.monotonic() - started < 1.0
        assert client.stats.pending == 0
        # The client is still usable after its callers went away.
        assert (await client.probe("127.0.0.1", timeout=0.05)).error == "timeout"


@pytest.mark.matrix
@pytest.mark.lab
async def test_closing_with_500_in_flight_ends_every_call(quiet: str) -> None:
    outcomes: list[BaseException | None] = []
    client = icmpx.AsyncClient(timeout=60)
    sockets_before = icmp_socket_count()

    async def one(addr: str) -> None:
        try:
            await client.ping(addr, count=3, interval=0)
        except icmpx.ClientClosedError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    async with anyio.create_task_group() as tg:
        await client.__aenter__()
        for i in range(500):
            tg.start_soon(one, f"127.0.{i // 250}.{i % 250 + 1}")
        await _wait_pending(client, 1500)
        started = time.monotonic()
        await client.aclose()
    assert time.monotonic() - started < 1.0
    assert len(outcomes) == 500
    assert all(isinstance(o, icmpx.ClientClosedError) for o in outcomes)
    assert client.stats.pending == 0
    assert icmp_socket_count() == sockets_before
    with pytest.raises(icmpx.ClientClosedError):
        await client.ping("127.0.0.1", count=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count"),
        ({"count": -3}, "count"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": 256}, "ttl"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"interval": -0.5}, "interval"),
        ({"payload_size": 65508}, "payload_size"),
        ({"payload_size": -1}, "payload_size"),
        ({"family": 5}, "family"),
    ],
)
async def test_bad_arguments_raise_before_anything_is_sent(kwargs: dict[str, object], message: str) -> None:
    async with icmpx.AsyncClient() as client:
        with pytest.raises(ValueError, match=message):
            await client.ping("127.0.0.1", **kwargs)  # type: ignore[arg-type]
        assert client.stats.sent == 0


async def test_family_mismatch_and_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        icmpx.AsyncClient(ttl=300)
    with pytest.raises(ValueError, match="timeout"):
        icmpx.AsyncClient(timeout=-2)
    with pytest.raises(ValueError, match="rate"):
        icmpx.AsyncClient(rate=-1)
    async with icmpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="IPv4"):
            await client.probe("127.0.0.1", family=6)
        with pytest.raises(ValueError, match="host"):
            await client.probe("")
        # IPv6 allows a larger payload than IPv4.
        assert (await client.probe("::1", payload_size=65508)).error is None


async def test_unopened_and_closed_clients_say_so() -> None:
    client = icmpx.AsyncClient()
    with pytest.raises(RuntimeError, match="async with"):
        await client.ping("127.0.0.1")
    async with client:
        pass
    with pytest.raises(icmpx.ClientClosedError):
        await client.ping("127.0.0.1")
    with pytest.raises(icmpx.ClientClosedError):
        await client.__aenter__()


@pytest.mark.lab
async def test_ping_sends_on_schedule_without_waiting_for_replies(quiet: str) -> None:
    """Five echoes 0.1 s apart, each with a 1 s timeout: all are sent before the first times out."""
    async with icmpx.AsyncClient(timeout=1) as client:
        started = time.monotonic()
        results = await client.ping("127.0.0.1", count=5, interval=0.1)
        elapsed = time.monotonic() - started
    assert [r.error for r in results] == ["timeout"] * 5
    assert 1.35 <= elapsed < 1.9


@pytest.mark.matrix
async def test_iter_ping_yields_in_sequence_order() -> None:
    async with icmpx.AsyncClient(timeout=1) as client:
        seen = [r async for r in client.iter_ping("127.0.0.1", count=4, interval=0.01)]
        assert len({r.request.seq for r in seen}) == 4  # order: see the 1-based position
        assert all(r.ok for r in seen)


def test_sync_client_iterates_and_closes() -> None:
    client = icmpx.Client(timeout=1)
    try:
        results = list(client.iter_ping("::1", count=3, interval=0.01))
        assert [r.error for r in results] == [None] * 3
        assert client.probe("127.0.0.1").ok
        assert client.stats.sockets == 2
    finally:
        client.close()
    assert client.closed
    with pytest.raises(icmpx.ClientClosedError):
        client.ping("127.0.0.1")


def test_sync_client_on_trio() -> None:
    with icmpx.Client(timeout=1, backend="trio") as client:
        assert [r.ok for r in client.ping("127.0.0.1", count=2, interval=0.01)] == [True, True]


def test_ping_stats_from_results() -> None:
    with icmpx.Client(timeout=1) as client:
        results = client.ping("127.0.0.1", count=4, interval=0.01)
    stats = icmpx.PingStats.from_results(results)
    assert (stats.sent, stats.received, stats.loss_pct) == (4, 4, 0.0)
    rtts = [r.rtt for r in results if r.rtt is not None]
    assert (stats.min_rtt, stats.max_rtt) == (min(rtts), max(rtts))


@pytest.mark.lab
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("privileged", [True, False])
async def test_more_than_65536_probes_in_flight(quiet: str, privileged: bool) -> None:
    """70,000 unanswered probes at once: a raw socket takes a second identifier, ping sockets a second
    socket (the kernel owns a ping socket's identifier). Every probe gets its own timeout result."""
    targets = [f"127.{1 + i // 65000}.{(i // 250) % 260 % 256}.{i % 250 + 1}" for i in range(70_000)]
    async with icmpx.AsyncClient(timeout=3, privileged=privileged) as client:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, client.stats.pending)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            rows = await client.multiping(targets, rate=None)
            tg.cancel_scope.cancel()
        stats = client.stats
    assert peak > 65536
    assert len(rows) == 70_000
    assert all(r.sent == 1 and r.received == 0 and r.loss_pct == 100.0 for r in rows)
    assert stats.timeouts == 70_000
    assert stats.pending == 0
    assert stats.socket_kinds == (("raw",) if privileged else ("dgram", "dgram"))


async def test_source_address_binds_its_own_family_only() -> None:
    async with icmpx.AsyncClient(timeout=1, source="127.0.0.1") as client:
        assert (await client.probe("127.0.0.2")).ok
        with pytest.raises(ValueError, match="source"):
            await client.probe("::1")
        assert client.stats.sockets == 1


def test_first_replies_of_a_fresh_process_have_kernel_rtts() -> None:
    """Linux switches receive timestamps on lazily; until it has, replies are stamped when read. The first
    300 echoes of a new process must still report loopback RTTs, not the time until the reader ran."""
    code = (
        "import icmpx\n"
        "with icmpx.Client(timeout=1) as c:\n"
        "    print(max(r.rtt for r in c.ping('127.0.0.1', count=300, interval=0)))\n"
    )
    worst = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(6)
    ]
    assert max(worst) < 5.0, worst


def test_sync_client_resolves_and_reports_its_socket_kind() -> None:
    with icmpx.Client(timeout=1) as client:
        target = client.resolve("::1")
        assert isinstance(target, icmpx.Target)
        assert (target.addr, target.v6) == ("::1", True)
        assert client.socket_kind(6) in {"raw", "dgram"}
        assert client.stats.sockets == 1  # opened without sending anything
        assert client.stats.sent == 0


async def test_mtr_needs_a_positive_interval() -> None:
    async with icmpx.AsyncClient(timeout=1) as client:
        for interval in (0, -1):
            with pytest.raises(ValueError, match="interval"):
                client.mtr("127.0.0.1", interval=interval)
        assert client.stats.sent == 0


def test_a_client_never_closed_does_not_keep_the_process_alive() -> None:
    code = (
        "import icmpx\n"
        "client = icmpx.Client(timeout=1)\n"
        "print(client.ping('127.0.0.1', count=1)[0].ok)\n"  # and exit without close()
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
