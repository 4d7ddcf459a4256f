"""The engine's side of a long-lived program: closing during a batch send, and memory that follows what
is in flight (issue 13's findings 1 and 3)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys

import anyio
import anyio.lowlevel
import pytest

import icmpx
from icmpx import _wire

pytestmark = pytest.mark.anyio


def _targets(n: int, block: int = 1) -> list[str]:
    return [f"127.{block}.{i // 250 % 250}.{i % 250 + 1}" for i in range(n)]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.lab
@pytest.mark.parametrize("round_", range(3))
async def test_closing_during_a_batch_send_writes_into_no_other_socket(quiet: str, round_: int) -> None:
    """Close the client while an unpaced sweep hands batches to the worker thread, then at once open
    TCP connections (which take the lowest free descriptor numbers): none may receive a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    pairs: list[tuple[socket.socket, socket.socket]] = []
    outcome: list[BaseException] = []
    try:
        async with anyio.create_task_group() as tg:
            client = icmpx.AsyncClient(timeout=5)
            await client.__aenter__()

            async def sweep() -> None:
                try:
                    await client.multiping(_targets(60_000, block=1 + round_), rate=None)
                except icmpx.ClientClosedError as exc:
                    outcome.append(exc)

            tg.start_soon(sweep)
            with anyio.fail_after(10):
                while client.stats.sent < 2048 * (round_ + 1):  # batches are going out
                    await anyio.lowlevel.checkpoint()
            await client.aclose()
            # No await from here until the connections exist: the worker thread is the only other party.
            for _ in range(400):
                near = socket.create_connection(listener.getsockname())
                far, _ = listener.accept()
                pairs.append((near, far))
        assert outcome, "the sweep should have ended with ClientClosedError"
        received = []
        for near, far in pairs:
            for sock in (near, far):
                sock.setblocking(False)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                received.append(data[:16])
        assert received == []
    finally:
        for near, far in pairs:
            near.close()
            far.close()
        listener.close()


async def test_batch_buffers_follow_the_sweep_and_go_when_it_ends() -> None:
    """Five concurrent one-target sweeps with 60,000-byte payloads kept about 400 MB of batch buffers
    for ever; now a batch has room for what it sends, and the buffers go when no sweep is sending."""
    async with icmpx.AsyncClient(timeout=1) as client:
        await client.probe("127.0.0.1")  # the socket and reader exist before the measure
        before = _rss_mib()
        async with anyio.create_task_group() as tg:
            for i in range(5):
                hosts = [f"127.0.9.{i + 1}"]
                tg.start_soon(lambda hosts=hosts: client.multiping(hosts, rate=None, payload_size=60_000))
        grown = _rss_mib() - before
        assert grown < 60, f"RSS grew by {grown:.0f} MiB"
        assert client._engine is not None
        assert client._engine._sender._free == {}


async def test_a_payload_too_large_for_ipv4_is_refused_before_sending() -> None:
    """It was checked against the IPv6 limit only: nothing was sent (EMSGSIZE) and 100% loss reported."""
    async with icmpx.AsyncClient(timeout=1) as client:
        with pytest.raises(ValueError, match="too large for IPv4"):
            await client.multiping(["127.0.0.1"], payload_size=65_520)
        assert client.stats.sent == 0
        rows = await client.multiping(["::1"], payload_size=65_520)  # within the IPv6 limit
        assert rows[0].received == 1


@pytest.mark.lab
async def test_a_send_the_kernel_refuses_is_an_error_not_loss(quiet: str) -> None:
    """No route: the kernel refuses the send (ENETUNREACH); the row says so instead of 100% loss."""
    async with icmpx.AsyncClient(timeout=0.5) as client:
        rows = await client.multiping(["198.18.7.7", "127.0.0.1"], rate=None)
        again = await client.multiping(["198.18.7.7"], count=2, interval=0.01)
        stats = client.stats
    assert rows[0].error == "net-unreachable"
    assert rows[0].received == 0
    assert rows[1].error is None  # quiet: no answer, but sent
    assert again[0].error == "net-unreachable"
    assert stats.send_errors == 3


@pytest.mark.lab
async def test_replies_the_kernel_drops_are_counted_not_mistaken_for_loss(quiet: str) -> None:
    """A full receive buffer loses packets inside this host; `kernel_drops` tells them from network loss."""
    injector = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    async with icmpx.AsyncClient(timeout=0.2, privileged=True) as client:
        first = await client.probe("127.0.0.1")
        assert client._engine is not None
        sock = client._engine._families[False].channels[0].sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # room for a handful of packets
        # Replies with our identifier (the kernel filter lets them in), made up: counted as forged when read.
        # Sent without an await: the reader cannot run meanwhile, so the buffer overflows.
        for seq in range(2000):
            body = struct.pack("!BBHHH", 0, 0, 0, first.request.ident, seq) + bytes(56)
            message = body[:2] + struct.pack("!H", _wire.checksum(body)) + body[4:]
            injector.sendto(message, ("127.0.0.1", 0))
        with anyio.fail_after(5):
            while client.stats.forged + client.stats.kernel_drops < 2000:  # noqa: ASYNC110 -- a counter
                await anyio.sleep(0.01)
        stats = client.stats
    injector.close()
    assert stats.kernel_drops > 1000
    assert stats.forged > 0
    assert stats.forged + stats.kernel_drops == 2000


@pytest.mark.lab
def test_the_command_line_names_a_refused_send_and_exits_1_not_2(quiet: str) -> None:
    """A row whose send the kernel refused has an address and an error: not an unresolved name."""
    proc = subprocess.run(
        [sys.executable, "-m", "icmpx", "multiping", "198.18.7.7", "-W", "0.2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    row = doc["hosts"][0]
    assert (row["addr"], row["error"], row["received"]) == ("198.18.7.7", "net-unreachable", 0)
