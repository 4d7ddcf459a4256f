"""multiping: many targets, ``count`` echoes each, from the one shared socket per family.

Memory per target is a few slots (an RTT accumulator only once a reply arrives), never a packet object; the
per-probe work is one send, one ``recvmsg``, one dictionary lookup and one accumulator update.

Sends are paced by a token bucket (``rate`` packets per second for this sweep, on top of the client's own
cap); round ``r`` to a target starts ``r * interval`` seconds after its round 0, as fping's ``-p``.
"""

from __future__ import annotations

import copy
import dataclasses
import socket
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import anyio
import anyio.lowlevel

from ._engine import Engine
from ._exceptions import NameResolutionError
from ._matching import Outcome, Probe
from ._models import DEFAULT_SWEEP_RATE, PingStats, PingStatsRow, Target
from ._options import ProbeOptions, SendOptions
from ._pacing import Pacer
from ._resolve import normalize_family, resolve, resolve_literal
from ._stats import RttAccumulator
from ._wire import MAX_PAYLOAD

__all__ = ["DEFAULT_RATE", "collect", "stream"]

DEFAULT_RATE = DEFAULT_SWEEP_RATE
"""Default pace of a sweep in packets per second: gentle on real networks and their ICMP rate limits,
still 60,000 targets a minute. Pass ``rate=None`` (or 0) for an unpaced sweep on networks you own."""

_RESOLVE_CONCURRENCY = 64
_BATCH = 2048


class _Sweep:
    """One sweep: its targets, what came back, and the engine's sink for its probes.

    For ``count == 1`` a target's result is one float; accumulators exist only for longer series. In
    streaming mode each completed target is queued for the consumer; otherwise only the end is signalled.
    """

    def __init__(
        self,
        engine: Engine,
        hosts: Sequence[str],
        targets: list[Target | None],
        *,
        count: int,
        ttl: int,
        payload_size: int,
        timeout: float,
        rate: float | None,
        stream: bool,
        options: dict[bool, SendOptions] | None = None,
    ) -> None:
        self.engine = engine
        self.options = options
        """Per family (True: IPv6), when the call has options; they keep it off the batch path."""
        self.hosts = hosts
        self.targets = targets
        self.count = count
        self.ttl = ttl
        self.payload_size = payload_size
        self.timeout_ns = int(timeout * 1e9)
        self.pacer = Pacer(rate) if rate else None
        self.stream = stream
        self.live = [i for i, t in enumerate(targets) if t is not None]
        n = len(hosts)
        self.rtts: list[float | None] = [None] * n
        self.accumulators: list[RttAccumulator | None] = [None] * n
        self.outstanding = [count] * n if count > 1 else []
        self.remaining = count * len(self.live)
        self.ready: list[int] = []
        self.send_errors: dict[int, str] = {}
        """Targets whose echo requests the kernel refused to send (index -> why): no network loss."""
        self.failure: BaseException | None = None
        self._changed = anyio.Event()

    # ----------------------------------------------------------------------------------- the sink
    def deliver(self, probe: Probe, outcome: Outcome) -> None:
        index: int = probe.tag
        rtt = outcome.rtt_ms
        if outcome.src is None and outcome.error not in (None, "timeout"):
            # Refused by the kernel before it left (no route, link down, too big): say why on the row.
            self.send_errors.setdefault(index, outcome.error)
        if self.count == 1:
            if outcome.error is None:
                self.rtts[index] = rtt
            complete = True
        else:
            if outcome.error is None and rtt is not None:
                acc = self.accumulators[index]
                if acc is None:
                    acc = self.accumulators[index] = RttAccumulator()
                acc.add(rtt)
            self.outstanding[index] -= 1
            complete = not self.outstanding[index]
        self.remaining -= 1
        if self.stream:
            if complete:
                self.ready.append(index)
                self._changed.set()
        elif not self.remaining:
            self._changed.set()

    def deliver_rtt(self, probe: Probe, rtt: float) -> None:
        """An echo reply (the reader's fast path): the same as `deliver` with a reply's outcome."""
        if self.count == 1 and not self.stream:
            # The common sweep, once per target: nothing to accumulate, nobody to hand rows to yet.
            self.rtts[probe.tag] = rtt
            self.remaining -= 1
            if not self.remaining:
                self._changed.set()
            return
        self.deliver(probe, Outcome(rtt, None))

    def abort(self, exc: BaseException) -> None:
        self.failure = exc
        self._changed.set()

    # -------------------------------------------------------------------------------- the driver
    def check(self) -> None:
        if self.failure is not None:
            raise copy.copy(self.failure)

    async def wait(self, timeout: float | None = None) -> None:
        """Until something changed (or ``timeout`` passed)."""
        if not self._changed.is_set():
            with anyio.move_on_after(timeout):
                await self._changed.wait()
        if self._changed.is_set():
            self._changed = anyio.Event()
        self.check()

    def take_ready(self) -> list[int]:
        ready, self.ready = self.ready, []
        return ready

    async def send_steps(self) -> AsyncGenerator[None, None]:
        """Send one echo to every live target, pausing after each paced send or unpaced batch (the caller
        may hand over finished rows there). Paced when the sweep or the client has a rate; unpaced sweeps
        go out in batches, the reader draining replies between them."""
        # Probes are not kept here (finished ones die young, cheap for the GC); `discard` asks the engine.
        targets, engine = self.targets, self.engine
        if self.pacer is not None or engine.paced:
            # Open the sockets first: the first packet must not leave late (after its pacer slot) while the
            # next ones keep to the schedule, or the wire would see more than `rate` in a second.
            for v6 in {target.v6 for target in targets if target is not None}:
                await engine.socket_kind(v6)
            for index in self.live:
                if self.pacer is not None:
                    await self.pacer.wait()
                target = targets[index]
                assert target is not None
                # Engine.send applies the client's own cap and waits out a full send buffer.
                await engine.send(
                    target,
                    ttl=self.ttl,
                    payload_size=self.payload_size,
                    timeout=self.timeout_ns / 1e9,
                    sink=self,
                    tag=index,
                    options=self.options[target.v6] if self.options else None,
                )
                self.check()
                yield
            return
        position = 0
        live = self.live
        while position < len(live):
            chunk = live[position : position + _BATCH]
            batch: list[Target] = [targets[i] for i in chunk]  # type: ignore[misc]
            # Yields to the reader (or waits out a full send buffer) inside.
            options = self.options[batch[0].v6] if self.options else None
            position += await engine.send_batch(
                batch, chunk, self.ttl, self.payload_size, self.timeout_ns, self, options
            )
            self.check()
            yield

    def discard(self) -> None:
        self.engine.discard_sink(self)

    def rows(self, errors: dict[int, str]) -> list[PingStats]:
        """Every row, in input order (``errors``: the rows that could not be pinged, and why)."""
        if self.count != 1:
            return [
                PingStats.unresolved(host, errors[i]) if i in errors else self.stats(i)
                for i, host in enumerate(self.hosts)
            ]
        # One echo each: a loop without a Python call per row (see PingStatsRow), which for 100,000 targets
        # shows.
        new_row, cls = PingStatsRow, PingStats
        rows: list[PingStats] = []
        append = rows.append
        for i, (host, target, rtt) in enumerate(zip(self.hosts, self.targets, self.rtts, strict=True)):
            if target is None:
                append(PingStats.unresolved(host, errors[i]))
                continue
            if rtt is None:
                row = new_row(host, target.addr, 1, 0, 100.0, None, None, None, None, None)
                if i in self.send_errors:
                    row.error = self.send_errors[i]
            else:
                row = new_row(host, target.addr, 1, 1, 0.0, rtt, rtt, rtt, 0.0, 0.0)
            row.__class__ = cls  # type: ignore[assignment]
            append(row)  # type: ignore[arg-type]
        return rows

    def stats(self, index: int) -> PingStats:
        target = self.targets[index]
        addr = target.addr if target is not None else None
        if self.count == 1:
            rtt = self.rtts[index]
            if rtt is None:
                row = PingStats._row(self.hosts[index], addr, 1, 0, 100.0, None, None, None, None, None)
            else:
                row = PingStats._row(self.hosts[index], addr, 1, 1, 0.0, rtt, rtt, rtt, 0.0, 0.0)
        else:
            acc = self.accumulators[index] or RttAccumulator()
            row = PingStats.from_accumulator(target=self.hosts[index], addr=addr, sent=self.count, acc=acc)
        if not row.received and index in self.send_errors:
            return dataclasses.replace(row, error=self.send_errors[index])
        return row


async def _resolve_all(
    hosts: Sequence[str], family: int | None
) -> tuple[list[Target | None], dict[int, str]]:
    """Resolve every host, names concurrently (bounded), literals at once; failures become row errors."""
    targets: list[Target | None] = [None] * len(hosts)
    errors: dict[int, str] = {}
    names: list[int] = []
    # The common case first, cheaply (a sweep may hold 100,000 of them): a canonical dotted quad, which
    # inet_pton accepts and which recvmsg reports as written. Anything else goes the general way.
    dotted_quads = family is None or normalize_family(family) == socket.AF_INET
    inet_pton, af_inet, new_target = socket.inet_pton, socket.AF_INET, tuple.__new__
    for i, host in enumerate(hosts):
        if dotted_quads:
            try:
                inet_pton(af_inet, host)
            except (OSError, TypeError, ValueError):
                pass
            else:
                targets[i] = new_target(Target, (host, host, False, (host, 0)))
                continue
        try:
            targets[i] = resolve_literal(host, family)
        except ValueError as exc:
            errors[i] = str(exc)
            continue
        if targets[i] is None:
            names.append(i)
    if names:
        limiter = anyio.Semaphore(_RESOLVE_CONCURRENCY)

        async def one(i: int) -> None:
            async with limiter:
                try:
                    targets[i] = await resolve(hosts[i], family)
                except (NameResolutionError, ValueError) as exc:
                    errors[i] = str(exc)

        async with anyio.create_task_group() as tg:
            for i in names:
                tg.start_soon(one, i)
    return targets, errors


async def _prepare(
    engine: Engine,
    hosts: Sequence[str],
    *,
    count: int,
    timeout: float,
    ttl: int,
    payload_size: int,
    rate: float | None,
    family: int | None,
    stream: bool,
    options: ProbeOptions | None,
) -> tuple[_Sweep, dict[int, str]]:
    targets, errors = await _resolve_all(hosts, family)
    by_family: dict[bool, SendOptions] | None = None
    if options is not None:
        # Checked for each family the sweep sends to, before anything is sent.
        by_family = {}
        for v6 in sorted({t.v6 for t in targets if t is not None}):
            built = await engine.send_options(options, v6)
            assert built is not None
            by_family[v6] = built
    if payload_size > MAX_PAYLOAD[False] and any(t is not None and not t.v6 for t in targets):
        # Checked per family once the addresses are known, before anything is sent.
        raise ValueError(
            f"payload_size {payload_size} is too large for IPv4 (at most {MAX_PAYLOAD[False]} bytes)"
        )
    sweep = _Sweep(
        engine,
        hosts,
        targets,
        count=count,
        ttl=ttl,
        payload_size=payload_size,
        timeout=timeout,
        rate=rate,
        stream=stream,
        options=by_family,
    )
    return sweep, errors


async def collect(
    engine: Engine,
    hosts: Sequence[str],
    *,
    count: int,
    interval: float,
    timeout: float,
    ttl: int,
    payload_size: int,
    rate: float | None,
    family: int | None,
    options: ProbeOptions | None = None,
) -> list[PingStats]:
    """Ping every host ``count`` times; one `PingStats` per host, in input order."""
    sweep, errors = await _prepare(
        engine,
        hosts,
        count=count,
        timeout=timeout,
        ttl=ttl,
        payload_size=payload_size,
        rate=rate,
        family=family,
        stream=False,
        options=options,
    )
    start = anyio.current_time()
    try:
        with engine.watch(sweep):
            for round_ in range(count):
                if round_:
                    due = start + round_ * interval
                    while (left := due - anyio.current_time()) > 0:
                        await sweep.wait(left)
                async with aclosing(sweep.send_steps()) as steps:
                    async for _ in steps:
                        pass
            while sweep.remaining:
                await sweep.wait()
    finally:
        sweep.discard()
    return sweep.rows(errors)


async def stream(
    engine: Engine,
    hosts: Sequence[str],
    *,
    count: int,
    interval: float,
    timeout: float,
    ttl: int,
    payload_size: int,
    rate: float | None,
    family: int | None,
    options: ProbeOptions | None = None,
) -> AsyncGenerator[PingStats, None]:
    """Ping every host ``count`` times; yield each host's `PingStats` as soon as it is complete."""
    sweep, errors = await _prepare(
        engine,
        hosts,
        count=count,
        timeout=timeout,
        ttl=ttl,
        payload_size=payload_size,
        rate=rate,
        family=family,
        stream=True,
        options=options,
    )
    for i, message in errors.items():
        yield PingStats.unresolved(hosts[i], message)
    start = anyio.current_time()
    try:
        with engine.watch(sweep):
            for round_ in range(count):
                if round_:
                    # Hand over what completes while waiting for the round's time. (Never yield inside a
                    # cancel scope: the consumer's code would run inside it.)
                    due = start + round_ * interval
                    while True:
                        for index in sweep.take_ready():
                            yield sweep.stats(index)
                        left = due - anyio.current_time()
                        if left <= 0:
                            break
                        await sweep.wait(left)
                async with aclosing(sweep.send_steps()) as steps:
                    async for _ in steps:
                        for index in sweep.take_ready():
                            yield sweep.stats(index)
            while True:
                for index in sweep.take_ready():
                    yield sweep.stats(index)
                if not sweep.remaining:
                    break
                await sweep.wait()
    finally:
        sweep.discard()
