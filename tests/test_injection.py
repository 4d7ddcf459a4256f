"""Errors no Linux router sends, injected: RFC 4950 MPLS labels on a Time Exceeded, spoofed quotes.

In a namespace where nothing answers echoes, a second raw socket sees our probe leave and answers it with a
hand-built ICMP error quoting it, as a router would.
"""

from __future__ import annotations

import socket
import struct

import anyio
import pytest

import icmpx
from icmpx import _wire

pytestmark = [pytest.mark.lab, pytest.mark.anyio]

LABELS = [(16004, 0, False, 1), (24001, 5, True, 254)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def time_exceeded_with_mpls(quote: bytes, labels: list[tuple[int, int, bool, int]]) -> bytes:
    """An RFC 4884 Time Exceeded: the quote padded to 128 bytes, its length in the header, an MPLS object."""
    original = quote[:128].ljust(128, b"\0")
    entries = b"".join(
        struct.pack("!I", (label << 12) | (tc << 9) | (int(bottom) << 8) | ttl)
        for label, tc, bottom, ttl in labels
    )
    obj = struct.pack("!HBB", 4 + len(entries), 1, 1) + entries
    ext = bytearray(b"\x20\x00\x00\x00" + obj)
    ext[2:4] = struct.pack("!H", _wire.checksum(bytes(ext)))
    message = bytearray(struct.pack("!BBHBBH", 11, 0, 0, 0, len(original) // 4, 0) + original + bytes(ext))
    message[2:4] = struct.pack("!H", _wire.checksum(bytes(message)))
    return bytes(message)


def sniffer() -> socket.socket:
    """A raw socket that sees our probes leave; open it before the probe is sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    return sock


async def sniff_and_answer(sniffer: socket.socket, build: object) -> None:
    """Wait for one echo request on loopback, answer it with ``build(quote)`` from 127.0.0.1."""
    assert callable(build)
    try:
        with anyio.fail_after(5):
            while True:
                await anyio.wait_readable(sniffer)
                packet = sniffer.recv(4096)
                ihl = (packet[0] & 0x0F) * 4
                if packet[ihl] == 8:  # our echo request, IP header included: exactly what a router quotes
                    sniffer.sendto(build(packet), ("127.0.0.1", 0))
                    return
    finally:
        sniffer.close()


async def test_mpls_labels_reach_probe_and_traceroute_results(quiet: str) -> None:
    async with icmpx.AsyncClient(timeout=2) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sniff_and_answer, sniffer(), lambda q: time_exceeded_with_mpls(q, LABELS))
            result = await client.probe("127.0.0.1", ttl=5)
        assert result.error == "time-exceeded"
        assert result.reply is not None
        packet = result.reply.received_packet
        assert packet.ip_header.src_addr == "127.0.0.1"
        assert (packet.icmp_type, packet.icmp_code) == (11, 0)
        assert [(m.label, m.tc, m.bottom, m.ttl) for m in packet.mpls] == LABELS

        async with anyio.create_task_group() as tg:
            tg.start_soon(sniff_and_answer, sniffer(), lambda q: time_exceeded_with_mpls(q, LABELS[:1]))
            trace = await client.traceroute("127.0.0.1", max_hops=1, probes=1)
        (hop,) = trace.hops
        assert hop.addr == "127.0.0.1"
        assert [(m.label, m.ttl) for m in hop.probes[0].mpls] == [(16004, 1)]


async def test_an_error_quoting_another_destination_is_not_ours(quiet: str) -> None:
    """A forged error whose quote names another destination is dropped; the probe times out honestly."""

    def forge(quote: bytes) -> bytes:
        rewritten = bytearray(quote)
        rewritten[16:20] = socket.inet_aton("127.9.9.9")
        return time_exceeded_with_mpls(bytes(rewritten), [])

    async with icmpx.AsyncClient(timeout=0.5) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sniff_and_answer, sniffer(), forge)
            result = await client.probe("127.0.0.1")
        assert result.error == "timeout"
        assert client.stats.foreign + client.stats.forged >= 1
