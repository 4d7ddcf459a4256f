"""ping and probe: series of echoes over the engine, results in sequence order."""

from __future__ import annotations

import copy
from collections.abc import AsyncGenerator

import anyio

from ._engine import Engine
from ._matching import Outcome, Probe
from ._models import (
    EchoReply,
    EchoRequest,
    EchoRequestRow,
    EchoResult,
    IPHeader,
    ReceivedPacket,
    Target,
    error_kind,
)
from ._options import SendOptions
from ._resolve import with_zone
from ._wire import format_ipv4

__all__ = ["SeriesSink", "echo_result", "iter_series"]


def echo_result(probe: Probe, outcome: Outcome, position: int = 1) -> EchoResult:
    """The public result for one probe's outcome; ``position`` is its 1-based place in the series."""
    asked = probe.options
    if asked is None:
        row = EchoRequestRow(probe.addr, probe.ident, probe.seq, probe.ttl, probe.payload_size, position)
    else:
        row = EchoRequestRow(
            probe.addr,
            probe.ident,
            probe.seq,
            probe.ttl,
            probe.payload_size,
            position,
            asked.source,
            asked.interface,
            asked.tos,
            asked.dont_fragment,
            asked.mark,
        )
    row.__class__ = EchoRequest  # type: ignore[assignment]  # see EchoRequestRow
    request: EchoRequest = row  # type: ignore[assignment]
    error = error_kind(outcome.error)
    if outcome.src is None or outcome.rtt_ms is None:
        return EchoResult(request=request, reply=None, error=error)
    packet = ReceivedPacket(
        ip_header=IPHeader(
            src_addr=with_zone(outcome.src, probe.addr) if "%" in probe.addr else outcome.src,
            dst_addr=format_ipv4(outcome.dst) if outcome.dst is not None else None,
            ttl=outcome.ttl,
            tos=outcome.tos,
        ),
        icmp_type=outcome.icmp_type,
        icmp_code=outcome.icmp_code,
        ident=probe.ident,
        seq=probe.seq,
        size=outcome.size,
        mpls=outcome.mpls,
    )
    return EchoResult(
        request=request,
        reply=EchoReply(rtt=outcome.rtt_ms, received_packet=packet),
        error=error,
        weak=outcome.weak,
    )


class SeriesSink:
    """Collects the outcomes of a numbered series of probes (``probe.tag`` is the position)."""

    def __init__(self, count: int) -> None:
        self.results: list[EchoResult | None] = [None] * count
        self.probes: list[Probe] = []
        self.failure: BaseException | None = None
        self._changed = anyio.Event()

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        self.results[probe.tag] = echo_result(probe, outcome, probe.tag + 1)
        self._changed.set()

    def abort(self, exc: BaseException) -> None:
        self.failure = exc
        self._changed.set()

    async def changed(self, timeout: float | None) -> None:
        """Wait until a result arrives (or ``timeout`` seconds pass); raise if the engine went away."""
        if not self._changed.is_set():
            with anyio.move_on_after(timeout):
                await self._changed.wait()
        if self._changed.is_set():
            self._changed = anyio.Event()
        self.check()

    def check(self) -> None:
        if self.failure is not None:
            raise copy.copy(self.failure)


async def iter_series(
    engine: Engine,
    target: Target,
    *,
    count: int,
    interval: float,
    ttl: int,
    payload_size: int,
    timeout: float,
    options: SendOptions | None = None,
) -> AsyncGenerator[EchoResult, None]:
    """Send ``count`` echoes ``interval`` seconds apart (not waiting for replies, as ping(8) does) and
    yield each result in sequence order as soon as it and those before it are known."""
    sink = SeriesSink(count)
    start = anyio.current_time()
    sent = 0
    yielded = 0
    try:
        with engine.watch(sink):  # closing the client wakes us even between two echoes
            while yielded < count:
                while sent < count and anyio.current_time() >= start + sent * interval:
                    probe = await engine.send(
                        target,
                        ttl=ttl,
                        payload_size=payload_size,
                        timeout=timeout,
                        sink=sink,
                        tag=sent,
                        options=options,
                    )
                    sink.probes.append(probe)
                    sent += 1
                sink.check()
                while yielded < count and (result := sink.results[yielded]) is not None:
                    yield result
                    yielded += 1
                if yielded >= count:
                    break
                wait = None if sent >= count else max(start + sent * interval - anyio.current_time(), 0.0)
                await sink.changed(wait)
    finally:
        engine.discard(sink.probes)
