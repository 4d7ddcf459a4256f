"""mtr: a trace round every ``interval`` seconds, per-hop statistics accumulated across cycles.

Cycle ``k`` starts ``k * interval`` seconds after the first, whether or not earlier cycles have finished (they
overlap when the timeout is longer than the interval, as in mtr). One generator drives every round in flight
itself (no task per cycle, and never a yield inside a task group): it sends a round when it is due, and
yields a report each time the oldest round in flight completes, so reports come in cycle order.

A hop's figures count a probe once its outcome is final (answered or timed out), so after ``n`` reports every
displayed hop has ``sent == n``. As in mtr, the hop list ends at the lowest TTL at which the destination has
answered so far; rounds started after its first answer (in any round, complete or not) probe only up to
that TTL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator

import anyio

from ._engine import Engine
from ._models import MtrHop, MtrReport, Target
from ._options import SendOptions
from ._resolve import ReverseResolver
from ._stats import RttAccumulator, loss_pct
from ._traceroute import Signal, TraceRound, paris_checksum, reverse_names

__all__ = ["mtr"]


class _HopStats:
    __slots__ = ("acc", "addrs", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.acc = RttAccumulator()
        self.addrs: Counter[str] = Counter()


class _Session:
    def __init__(self, target: Target, max_hops: int) -> None:
        self.target = target
        self.max_hops = max_hops
        self.hops: dict[int, _HopStats] = {}
        self.end_ttl: int | None = None
        self.cycles = 0
        self.names: dict[str, str | None] = {}

    def learn(self, trace: TraceRound) -> None:
        """Take the destination's TTL from a round as soon as the destination answered in it, whether or not
        the round is complete: the next rounds then probe no further (with a silent hop, a round completes
        only when its probes time out, and several rounds may start meanwhile)."""
        if (
            trace.end_ttl is not None
            and trace.reached
            and (self.end_ttl is None or trace.end_ttl < self.end_ttl)
        ):
            self.end_ttl = trace.end_ttl

    def absorb(self, trace: TraceRound) -> set[str]:
        """Add a completed round's outcomes; return responders not seen before."""
        self.learn(trace)
        new: set[str] = set()
        for ttl in trace.ttls:
            if ttl > trace.last_ttl:
                break
            hop = self.hops.get(ttl)
            if hop is None:
                hop = self.hops[ttl] = _HopStats()
            for outcome in trace.outcomes[ttl]:
                hop.sent += 1
                if outcome is not None and outcome.src is not None and outcome.rtt_ms is not None:
                    hop.received += 1
                    hop.acc.add(outcome.rtt_ms)
                    if outcome.src not in hop.addrs and outcome.src not in self.names:
                        new.add(outcome.src)
                    hop.addrs[outcome.src] += 1
        self.cycles += 1
        return new

    def probe_ttls(self) -> range:
        return range(1, (self.end_ttl or self.max_hops) + 1)

    def report(self) -> MtrReport:
        if self.end_ttl is not None:
            last = self.end_ttl
        else:
            answered = [ttl for ttl, hop in self.hops.items() if hop.received]
            last = max(answered) if answered else max(self.hops, default=0)
        rows = []
        for ttl in range(1, last + 1):
            hop = self.hops.get(ttl) or _HopStats()
            ordered = [addr for addr, _ in hop.addrs.most_common()]
            addr = ordered[0] if ordered else None  # the most frequent responder (first seen on ties)
            acc = hop.acc
            rows.append(
                MtrHop(
                    ttl=ttl,
                    addr=addr,
                    addrs=tuple(ordered),
                    hostname=self.names.get(addr) if addr is not None else None,
                    sent=hop.sent,
                    received=hop.received,
                    loss_pct=loss_pct(hop.sent, hop.received),
                    last_rtt=acc.last,
                    min_rtt=acc.best,
                    avg_rtt=acc.mean,
                    max_rtt=acc.worst,
                    stdev_rtt=acc.stdev,
                    jitter=acc.jitter,
                )
            )
        return MtrReport(target=self.target.host, addr=self.target.addr, cycle=self.cycles, hops=tuple(rows))


async def mtr(
    engine: Engine,
    target: Target,
    *,
    cycles: int | None,
    interval: float,
    max_hops: int,
    timeout: float,
    payload_size: int,
    resolver: ReverseResolver | None,
    options: SendOptions | None = None,
) -> AsyncGenerator[MtrReport, None]:
    session = _Session(target, max_hops)
    checksum = paris_checksum()  # one flow for the whole session: every cycle follows the same path
    signal = Signal()
    in_flight: list[TraceRound] = []
    started = 0
    start = anyio.current_time()
    try:
        with engine.watch(signal):  # closing the client wakes us between cycles too
            while cycles is None or session.cycles < cycles:
                # Report the oldest rounds that have finished, in cycle order, before starting more.
                if in_flight and in_flight[0].finished():
                    trace = in_flight.pop(0)
                    engine.discard(trace.sent)
                    new = session.absorb(trace)
                    if resolver is not None and new:
                        session.names.update(await reverse_names(resolver, new))
                    yield session.report()
                    continue
                # Start the next round when it is due, up to the destination's TTL as known so far.
                if (
                    cycles is None or started < cycles
                ) and anyio.current_time() >= start + started * interval:
                    for trace in in_flight:
                        session.learn(trace)
                    trace = TraceRound(target, session.probe_ttls(), 1, signal)
                    in_flight.append(trace)
                    started += 1
                    await trace.send(
                        engine,
                        timeout=timeout,
                        payload_size=payload_size,
                        checksum=checksum,
                        options=options,
                    )
                    continue
                for trace in in_flight:
                    trace.check()
                due = start + started * interval - anyio.current_time()
                await signal.wait(due if cycles is None or started < cycles else None)
                signal.check()
    finally:
        for trace in in_flight:
            engine.discard(trace.sent)
