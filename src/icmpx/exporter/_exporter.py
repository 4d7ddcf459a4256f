"""The exporter: resolve the configured hosts, probe every target on its own schedule, reload.

Theory of operation
-------------------
One `AsyncClient` (one per distinct ``source`` address) and so one ICMP socket per family carries every
probe. A *scheduler* task wakes every few milliseconds and hands the engine the echoes that fell due since
its last pass (`Engine.send_many`: one tight loop, no task or future per probe); within each group the
targets are spread evenly over the interval, so 10,000 targets at 1 s are 10 echoes every millisecond,
never a burst of 10,000. Outcomes reach one long-lived `Sink` that updates the target's `Series`.
Scrapes only read those counters, so probing does not depend on them.

A reload (SIGHUP, ``POST /-/reload``) and each ``dns_refresh`` resolve names again and rebuild the list of
targets: a target whose label set is unchanged keeps its `Series` object and so its counters and
histogram; new ones start at zero, removed ones are dropped from ``/metrics``.
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio

from .._client import AsyncClient
from .._engine import Engine
from .._exceptions import IcmpxError, NameResolutionError
from .._models import Target
from .._resolve import normalize_family, resolve_literal
from ._config import Config, ConfigError, Group
from ._metrics import Series, Sink, label_text

__all__ = ["Exporter", "Resolver", "resolve_addresses"]

# The scheduler sleeps until the next echo falls due, at least _TICK (echoes due meanwhile go together)
# and at most _MAX_SLEEP (so a reload's new schedule starts promptly).
_TICK = 0.005
_MAX_SLEEP = 0.1
_RESOLVE_TIMEOUT = 10.0
_RESOLVE_CONCURRENCY = 32

Resolver = Callable[[str, str], Awaitable[list[Target]]]
"""``(host, family) -> targets``; raises `NameResolutionError` when the name does not resolve."""


async def resolve_addresses(host: str, family: str) -> list[Target]:
    """The addresses to probe for ``host``: for ``auto`` the first the resolver gives (as ping picks), for
    ``4`` / ``6`` every address of that family, for ``both`` every address of either."""
    fam = None if family in ("auto", "both") else normalize_family(int(family))
    literal = resolve_literal(host, fam)
    if literal is not None:
        return [literal]
    try:
        with anyio.fail_after(_RESOLVE_TIMEOUT):
            infos = await anyio.getaddrinfo(host, None, family=fam or 0, type=socket.SOCK_DGRAM)
    except TimeoutError:
        raise NameResolutionError(host, f"no answer from the resolver in {_RESOLVE_TIMEOUT:g} s") from None
    except socket.gaierror as exc:
        raise NameResolutionError(host, exc.strerror or str(exc)) from exc
    except UnicodeError as exc:
        raise NameResolutionError(host, str(exc)) from exc
    targets: list[Target] = []
    seen: set[str] = set()
    for af, _type, _proto, _canon, sa in infos:
        if af not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = str(sa[0]).partition("%")[0]
        if addr in seen:
            continue
        seen.add(addr)
        targets.append(Target(host=host, addr=addr, v6=af == socket.AF_INET6, sockaddr=tuple(sa)))
        if family == "auto":
            break
    if not targets:
        raise NameResolutionError(host, "no IPv4 or IPv6 address")
    return targets


@dataclass(slots=True)
class _Schedule:
    """One group's targets and where its round stands."""

    group: Group
    series: list[Series]
    start: float
    done: int = 0  # targets already sent to in this round

    @property
    def timeout_ns(self) -> int:
        return int(self.group.timeout * 1e9)


@dataclass(slots=True)
class _Resolved:
    """What a group's names resolved to at its last resolution."""

    at: float
    targets: dict[str, list[Target]]  # by host; absent: did not resolve
    errors: dict[str, str]


class Exporter:
    """Probes the configured targets continuously and keeps their `Series`."""

    def __init__(
        self,
        config: Config,
        *,
        privileged: bool | None = None,
        resolver: Resolver = resolve_addresses,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.privileged = privileged
        self.resolver = resolver
        self.log = log or (lambda message: print(f"icmpx exporter: {message}", file=sys.stderr, flush=True))
        self.series: dict[str, Series] = {}
        self.resolvable: dict[str, int] = {}
        self.unresolved: dict[str, str] = {}
        self.ready = False
        self.last_reload_ok = True
        self.last_reload_time = time.time()
        self._schedules: list[_Schedule] = []
        self._families: set[tuple[str | None, bool]] = set()
        self._resolved: list[_Resolved] = []
        self._clients: dict[str | None, AsyncClient] = {}
        self._stack = AsyncExitStack()
        self._sink = Sink(config.buckets)
        self._lock = anyio.Lock()
        self._refreshed = anyio.Event()

    # ------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Exporter:
        await self._stack.__aenter__()
        await self._client(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _client(self, source: str | None) -> AsyncClient:
        client = self._clients.get(source)
        if client is None:
            client = AsyncClient(privileged=self.privileged, source=source)
            await client.__aenter__()
            try:
                if source is not None:
                    # Sockets open on first use: open this one now, so a source address that is not ours
                    # fails the (re)load that asked for it, not the probing later.
                    await client.socket_kind(6 if ":" in source else 4)
            except BaseException:
                await client.aclose()
                raise
            self._stack.push_async_exit(client)
            engine = client._engine
            assert engine is not None
            self._stack.enter_context(engine.watch(self._sink))
            self._clients[source] = client
        return client

    @property
    def client(self) -> AsyncClient:
        """The client without a source address (``/probe`` and the engine counters use it)."""
        return self._clients[None]

    def engines(self) -> list[Engine]:
        return [c._engine for c in self._clients.values() if c._engine is not None]

    async def run(self) -> None:
        """Resolve, then probe until cancelled (raises what the engine failed with, if it does)."""
        await self.apply(self.config, initial=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._schedule_loop)
            tg.start_soon(self._refresh_loop)

    # --------------------------------------------------------------------------------------- reload

    async def reload(self, load: Callable[[], Config]) -> str | None:
        """Load a new configuration and apply it; on failure keep the old one. Returns the error, if any."""
        try:
            config = load()
            await self.apply(config)
        except (ConfigError, IcmpxError, OSError) as exc:
            # Nothing was switched yet (apply opens the new clients first): the old configuration runs on.
            self.last_reload_ok = False
            message = str(exc) if isinstance(exc, ConfigError) else f"{config.source}: {exc}"
            self.log(f"reload failed, still running the previous configuration: {message}")
            return message
        self.log(f"reloaded {config.source}: {len(self.series)} targets")
        return None

    async def apply(self, config: Config, *, initial: bool = False) -> None:
        """Resolve every group of ``config`` and switch to it (unchanged targets keep their counters)."""
        async with self._lock:
            for group in config.groups:
                await self._client(group.source)
            resolved = [await self._resolve_group(group) for group in config.groups]
            if config.buckets != self.config.buckets:
                self._sink.bounds = list(config.buckets)
                for s in self.series.values():
                    s.reset_histogram(len(config.buckets))
            self.config = config
            self._resolved = resolved
            self._rebuild()
            self.last_reload_ok = True
            self.last_reload_time = time.time()
            self.ready = True
        self._refreshed.set()
        if initial:
            self.log(f"{len(self.series)} targets from {config.source}")

    async def _resolve_group(self, group: Group) -> _Resolved:
        targets: dict[str, list[Target]] = {}
        errors: dict[str, str] = {}
        limiter = anyio.Semaphore(_RESOLVE_CONCURRENCY)

        async def one(host: str) -> None:
            async with limiter:
                try:
                    targets[host] = await self.resolver(host, group.family)
                except NameResolutionError as exc:
                    errors[host] = str(exc)

        literal_family = {"4": 4, "6": 6}.get(group.family)
        async with anyio.create_task_group() as tg:
            for host in group.hosts:
                # Address literals need no resolver (a fleet of 100,000 of them starts at once).
                literal = (
                    resolve_literal(host, literal_family) if self.resolver is resolve_addresses else None
                )
                if literal is not None:
                    targets[host] = [literal]
                else:
                    tg.start_soon(one, host)
        for host, message in errors.items():
            if self.unresolved.get(host) != message:
                self.log(message)
        return _Resolved(at=time.monotonic(), targets=targets, errors=errors)

    def _rebuild(self) -> None:
        """Series and schedules from the resolved groups; a known label set keeps its Series."""
        old = self.series
        nbuckets = len(self.config.buckets)
        series: dict[str, Series] = {}
        schedules: list[_Schedule] = []
        resolvable: dict[str, int] = {}
        unresolved: dict[str, str] = {}
        now = time.monotonic()
        previous = {s.group: s for s in self._schedules}
        for index, (group, resolved) in enumerate(zip(self.config.groups, self._resolved, strict=True)):
            members: list[Series] = []
            for host in group.hosts:
                found = resolved.targets.get(host)
                if found is None:
                    resolvable[host] = 0
                    unresolved[host] = resolved.errors.get(host, "did not resolve")
                    continue
                resolvable.setdefault(host, 1)
                for target in found:
                    family = "6" if target.v6 else "4"
                    labels = label_text(
                        (("host", host), ("ip", target.addr), ("family", family), *group.labels)
                    )
                    s = old.get(labels)
                    if s is None:
                        s = Series(host, target, labels, index, nbuckets)
                    else:
                        s.target, s.group = target, index
                    series[labels] = s
                    members.append(s)
            before = previous.get(group)
            schedules.append(_Schedule(group, members, before.start if before is not None else now))
        self.series = series
        self.resolvable = resolvable
        self.unresolved = unresolved
        self._schedules = schedules
        # The sockets the schedules send on (Engine.send_many needs them open; opening is async).
        self._families = {
            (schedule.group.source, member.target.v6) for schedule in schedules for member in schedule.series
        }

    async def _refresh_loop(self) -> None:
        """Re-resolve each group's names every ``dns_refresh`` seconds."""
        while True:
            now = time.monotonic()
            due = math.inf
            for group, resolved in zip(self.config.groups, self._resolved, strict=True):
                if group.dns_refresh > 0 and any(not resolve_literal_quiet(h) for h in group.hosts):
                    due = min(due, resolved.at + group.dns_refresh)
            with anyio.move_on_after(max(0.0, due - now) if math.isfinite(due) else None):
                await self._refreshed.wait()
            if self._refreshed.is_set():
                self._refreshed = anyio.Event()  # the configuration changed: recompute the deadlines
                continue
            async with self._lock:
                config, now = self.config, time.monotonic()
                for i, group in enumerate(config.groups):
                    if group.dns_refresh > 0 and self._resolved[i].at + group.dns_refresh <= now:
                        self._resolved[i] = await self._resolve_group(group)
                self._rebuild()

    # ------------------------------------------------------------------------------------ schedule

    async def _schedule_loop(self) -> None:
        while True:
            for source, v6 in list(self._families):
                await self._clients[source].open_socket(6 if v6 else 4)  # at once when already open
            now = time.monotonic()
            wake = self._send_due(now)
            if self._sink.failure is not None:
                raise self._sink.failure
            await anyio.sleep(min(max(wake - time.monotonic(), _TICK), _MAX_SLEEP))

    def _send_due(self, now: float) -> float:
        """Send what fell due; returns when the next echo falls due."""
        wake = now + _MAX_SLEEP
        for schedule in self._schedules:
            members = schedule.series
            if not members:
                continue
            interval = schedule.group.interval
            elapsed = now - schedule.start
            if elapsed >= interval:
                if schedule.done < len(members):
                    self._send(schedule, len(members))  # finish the round before the next one
                # Far behind (a stalled loop), the rounds that were missed are skipped, not burst out.
                schedule.start += interval * int(elapsed // interval)
                schedule.done = 0
                elapsed = now - schedule.start
            n = len(members)
            due = min(n, int(elapsed / interval * n) + 1)
            if due > schedule.done:
                self._send(schedule, due)
            # Target i of a round is due at start + i * interval / n.
            wake = min(
                wake, schedule.start + (schedule.done * interval / n if schedule.done < n else interval)
            )
        return wake

    def _send(self, schedule: _Schedule, due: int) -> None:
        group = schedule.group
        client = self._clients[group.source]
        engine = client._engine
        assert engine is not None
        batch = schedule.series[schedule.done : due]
        sent = engine.send_many(
            [s.target for s in batch], batch, client.ttl, group.size, schedule.timeout_ns, self._sink
        )
        for s in batch[:sent]:
            s.requests += 1
        schedule.done += sent  # the rest (a full send buffer) goes on the next pass

    def config_changed(self) -> None:
        self._refreshed.set()


def resolve_literal_quiet(host: str) -> bool:
    try:
        return resolve_literal(host) is not None
    except ValueError:
        return False
