"""traceroute: every TTL at once over the shared engine.

A trace round sends its probes for all TTLs together (round-robin: the first probe of every TTL, then the
second, ...), and ends as soon as the *end* is known (the lowest TTL at which the destination answered, or
at which a router said the destination is unreachable) and every probe at or below it has answered or timed
out. Probes above the end are discarded, so a silent hop costs one timeout in all, not one per hop.

In Paris mode every probe of a trace carries the same ICMP checksum (two payload bytes compensate for the
changing sequence), so per-flow load balancers, which hash the ICMP type, code and checksum, keep every probe
on one path.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncGenerator, Sequence

import anyio

from ._engine import Engine
from ._matching import Outcome, Probe
from ._models import ErrorKind, Hop, HopProbe, Target, TracerouteResult, error_kind
from ._options import SendOptions
from ._resolve import ReverseResolver

__all__ = [
    "Signal",
    "TraceRound",
    "build_hops",
    "iter_hops",
    "paris_checksum",
    "run_round",
    "traceroute",
]

# Errors that end a trace at their TTL (traceroute's !H, !N, !P, !X ...): the path goes no further.
_CONTINUE = frozenset({None, "timeout", "time-exceeded"})


def paris_checksum() -> int:
    """A checksum for one trace (or one mtr session): every probe of it will carry this value."""
    return random.randrange(1, 0xFFFF)


class Signal:
    """Wakes one waiter when any of several rounds changed (a re-armable event); also told of closing."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.failure: BaseException | None = None

    def set(self) -> None:
        self._event.set()

    def abort(self, exc: BaseException) -> None:
        self.failure = exc
        self._event.set()

    def check(self) -> None:
        if self.failure is not None:
            raise type(self.failure)(*self.failure.args)

    async def wait(self, timeout: float | None = None) -> None:
        if not self._event.is_set():
            with anyio.move_on_after(timeout):
                await self._event.wait()
        if self._event.is_set():
            self._event = anyio.Event()


class TraceRound:
    """The outcomes of one round of probes over a range of TTLs; a sink for the engine."""

    def __init__(self, target: Target, ttls: range, probes: int, signal: Signal | None = None) -> None:
        self.target = target
        self.ttls = ttls
        self.probes = probes
        self.outcomes: dict[int, list[Outcome | None]] = {ttl: [None] * probes for ttl in ttls}
        self.end_ttl: int | None = None
        self.reached = False
        self.sent: list[Probe] = []
        self.failure: BaseException | None = None
        self._undone: dict[int, int] = dict.fromkeys(ttls, 0)
        self.signal = signal or Signal()

    # sink interface
    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        ttl, index = probe.tag
        self.outcomes[ttl][index] = outcome
        self._undone[ttl] -= 1
        if outcome.error not in _CONTINUE or (outcome.error is None and outcome.src == self.target.addr):
            if self.end_ttl is None or ttl < self.end_ttl:
                self.end_ttl = ttl
                self.reached = outcome.error is None
            elif ttl == self.end_ttl and outcome.error is None:
                self.reached = True
        self.signal.set()

    def abort(self, exc: BaseException) -> None:
        self.failure = exc
        self.signal.set()

    def wanted(self, ttl: int) -> bool:
        return self.end_ttl is None or ttl <= self.end_ttl

    def finished(self) -> bool:
        """Every probe sent at or below the end of the path has answered or timed out."""
        return all(self._undone[ttl] == 0 for ttl in self.ttls if ttl <= self.last_ttl)

    def complete(self, ttl: int) -> bool:
        """Every probe sent at ``ttl`` has answered or timed out."""
        return self._undone[ttl] == 0

    def check(self) -> None:
        if self.failure is not None:
            raise type(self.failure)(*self.failure.args)

    async def send(
        self,
        engine: Engine,
        *,
        timeout: float,
        payload_size: int,
        checksum: int | None,
        options: SendOptions | None = None,
    ) -> None:
        """Send the round's probes, round-robin over TTLs, skipping TTLs beyond a known end."""
        for index in range(self.probes):
            for ttl in self.ttls:
                if not self.wanted(ttl):
                    break
                self._undone[ttl] += 1
                probe = await engine.send(
                    self.target,
                    ttl=ttl,
                    payload_size=payload_size,
                    timeout=timeout,
                    sink=self,
                    tag=(ttl, index),
                    checksum=checksum,
                    options=options,
                )
                self.sent.append(probe)

    @property
    def last_ttl(self) -> int:
        return self.end_ttl if self.end_ttl is not None else self.ttls[-1]


async def run_round(
    engine: Engine,
    target: Target,
    *,
    ttls: range,
    probes: int,
    timeout: float,
    payload_size: int,
    checksum: int | None,
    options: SendOptions | None = None,
) -> TraceRound:
    """Probe every TTL of ``ttls`` ``probes`` times at once; return when the path's end is known."""
    trace = TraceRound(target, ttls, probes)
    try:
        await trace.send(
            engine, timeout=timeout, payload_size=payload_size, checksum=checksum, options=options
        )
        while not trace.finished():
            await trace.signal.wait()
            trace.check()
    finally:
        engine.discard(trace.sent)
    return trace


def _hop_probe(outcome: Outcome | None) -> HopProbe:
    if outcome is None or outcome.rtt_ms is None or outcome.src is None:
        error = error_kind(outcome.error) if outcome else ErrorKind.TIMEOUT
        return HopProbe(rtt=float("inf"), addr=None, error=error)
    return HopProbe(
        rtt=outcome.rtt_ms,
        addr=outcome.src,
        error=error_kind(outcome.error),
        mpls=outcome.mpls,
        weak=outcome.weak,
    )


def most_frequent(addrs: Sequence[str]) -> str | None:
    """The responder seen most often (the first seen among equals)."""
    if not addrs:
        return None
    counts = Counter(addrs)
    best = max(counts.values())
    return next(a for a in addrs if counts[a] == best)


def build_hop(trace: TraceRound, ttl: int, names: dict[str, str | None]) -> Hop:
    probes = tuple(_hop_probe(o) for o in trace.outcomes[ttl])
    seen = [p.addr for p in probes if p.addr is not None]
    addr = most_frequent(seen)
    return Hop(
        ttl=ttl,
        addr=addr,
        addrs=tuple(dict.fromkeys(seen)),
        hostname=names.get(addr) if addr is not None else None,
        probes=probes,
    )


def build_hops(trace: TraceRound, names: dict[str, str | None]) -> list[Hop]:
    return [build_hop(trace, ttl, names) for ttl in trace.ttls if ttl <= trace.last_ttl]


async def reverse_names(resolver: ReverseResolver, addrs: set[str]) -> dict[str, str | None]:
    """Reverse DNS of every address at once (each bounded in time, none failing the trace)."""
    names: dict[str, str | None] = {}

    async def one(addr: str) -> None:
        names[addr] = await resolver.lookup(addr)

    async with anyio.create_task_group() as tg:
        for addr in addrs:
            tg.start_soon(one, addr)
    return names


async def traceroute(
    engine: Engine,
    target: Target,
    *,
    max_hops: int,
    first_hop: int,
    probes: int,
    timeout: float,
    payload_size: int,
    paris: bool,
    resolver: ReverseResolver | None,
    options: SendOptions | None = None,
) -> TracerouteResult:
    trace = await run_round(
        engine,
        target,
        ttls=range(first_hop, max_hops + 1),
        probes=probes,
        timeout=timeout,
        payload_size=payload_size,
        checksum=paris_checksum() if paris else None,
        options=options,
    )
    names: dict[str, str | None] = {}
    if resolver is not None:
        responders = {
            o.src
            for ttl in trace.ttls
            if ttl <= trace.last_ttl
            for o in trace.outcomes[ttl]
            if o is not None and o.src is not None
        }
        names = await reverse_names(resolver, responders)
    return TracerouteResult(
        target=target.host, addr=target.addr, reached=trace.reached, hops=tuple(build_hops(trace, names))
    )


async def iter_hops(
    engine: Engine,
    target: Target,
    *,
    max_hops: int,
    first_hop: int,
    probes: int,
    timeout: float,
    payload_size: int,
    paris: bool,
    resolver: ReverseResolver | None,
    options: SendOptions | None = None,
) -> AsyncGenerator[Hop, None]:
    """The hops of one trace, each as soon as it and every hop below it are complete (as traceroute(8)
    prints them), up to the destination (or ``max_hops``). Leaving early discards the probes in flight."""
    trace = TraceRound(target, range(first_hop, max_hops + 1), probes)
    try:
        await trace.send(
            engine,
            timeout=timeout,
            payload_size=payload_size,
            checksum=paris_checksum() if paris else None,
            options=options,
        )
        ttl = first_hop
        while ttl <= trace.last_ttl:
            # A complete hop stays complete, and the end of the path can only move down to a TTL whose
            # probes are still pending: every hop yielded belongs to the final trace.
            while ttl <= trace.last_ttl and trace.complete(ttl):
                names: dict[str, str | None] = {}
                if resolver is not None:
                    responders = {o.src for o in trace.outcomes[ttl] if o is not None and o.src is not None}
                    names = await reverse_names(resolver, responders)
                yield build_hop(trace, ttl, names)
                ttl += 1
            if ttl <= trace.last_ttl:
                await trace.signal.wait()
                trace.check()
    finally:
        engine.discard(trace.sent)
