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
    """Collects the outcomes of a numbered series of probes (``probe.tag`` is the position).

    Holds only what is in flight: the probes not yet answered, and the results not yet handed over (those
    after a position still waiting), never a slot per echo of the series, which may be endless."""

    def __init__(self) -> None:
        self.results: dict[int, EchoResult] = {}
        self.in_flight: dict[int, Probe] = {}
        self.failure: BaseException | None = None
        self._changed = anyio.Event()

    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        self.in_flight.pop(probe.tag, None)
        self.results[probe.tag] = echo_result(probe, outcome, probe.tag + 1)
        self._changed.set()

    def sent(self, probe: Probe) -> None:
        """Track a probe just sent (unless its outcome came already: a local send failure)."""
        if probe.tag not in self.results:
            self.in_flight[probe.tag] = probe

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
    yield each result in sequence order as soon as it and those before it are known.

    Results are handed over between sends too, so a fast series (``interval=0``) streams while it sends;
    memory follows what is in flight, whatever ``count`` is."""
    sink = SeriesSink()
    results = sink.results
    start = anyio.current_time()
    sent = 0
    yielded = 0
    try:
        with engine.watch(sink):  # closing the client wakes us even between two echoes
            while yielded < count:
                # With no interval every echo is due at once: no clock to read (twice per echo, it showed).
                if sent < count and (not interval or anyio.current_time() >= start + sent * interval):
                    probe = await engine.send(
                        target,
                        ttl=ttl,
                        payload_size=payload_size,
                        timeout=timeout,
                        sink=sink,
                        tag=sent,
                        options=options,
                    )
                    sink.sent(probe)
                    sent += 1
                sink.check()
                while (result := results.pop(yielded, None)) is not None:
                    yield result
                    yielded += 1
                if yielded >= count:
                    break
                if sent < count and not interval:
                    continue  # the next echo is due now
                due = start + sent * interval - anyio.current_time() if sent < count else None
                if due is None or due > 0:
                    await sink.changed(due)
    finally:
        engine.discard(list(sink.in_flight.values()))
