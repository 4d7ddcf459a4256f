"""AsyncClient: owns the engine (sockets, reader tasks, timer) and offers the operations."""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from ._engine import Engine
from ._exceptions import ClientClosedError
from ._models import (
    DEFAULT_SWEEP_RATE,
    EchoResult,
    EngineStats,
    Hop,
    MtrReport,
    PingStats,
    Target,
    TracerouteResult,
)
from ._options import ProbeOptions, check_options, merge_options
from ._resolve import ReverseResolver, normalize_family, resolve
from ._wire import MAX_PAYLOAD

if TYPE_CHECKING:
    from ._pmtu import PathMtu

# The operations (_ping, _traceroute, _multiping, _mtr) are imported where they run: a command-line
# call loads only the one it uses (start-up time, see bench/README.md).

__all__ = ["AsyncClient"]


MAX_TIMEOUT = 7 * 24 * 3600.0
"""The longest an echo may wait for its answer (one week): deadlines are kept in integer nanoseconds."""


def check_timeout(timeout: float, name: str = "timeout", high: float | None = MAX_TIMEOUT) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {timeout!r}")
    if high is not None and timeout > high:
        raise ValueError(f"{name} must be at most {high:g} seconds, not {timeout!r}")
    return float(timeout)


def check_interval(interval: float) -> float:
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise TypeError(f"interval must be a number of seconds, not {interval!r}")
    if not math.isfinite(interval) or interval < 0:
        raise ValueError(f"interval must be zero or a positive number of seconds, not {interval!r}")
    return float(interval)


def check_int(value: int, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bounds}, not {value}")
    return value


def check_payload(size: int, v6: bool | None = None) -> int:
    limit = MAX_PAYLOAD[bool(v6)]
    check_int(size, "payload_size", 0)
    if size > limit:
        family = "IPv6" if v6 else "IPv4"
        raise ValueError(f"payload_size {size} is too large for {family} (at most {limit} bytes)")
    return size


def check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be None, 0 or a positive number of packets per second, not {rate!r}")
    return float(rate) or None


class AsyncClient:
    """An ICMP client for asyncio (and trio, through anyio).

    One ICMP socket per address family, opened on first use and shared by every call: use one client for
    the life of your program and run as many calls on it concurrently as you like:

        async with icmpx.AsyncClient(timeout=1.0) as client:
            results = await client.ping("127.0.0.1", count=3, interval=0.2)

    The client must be entered (``async with``) before use; leaving the block closes the sockets and ends
    every call still waiting with `ClientClosedError`. A closed client cannot be reopened.

    Args:
        timeout: Seconds to wait for the answer to each echo request (default 2.0); calls may override it.
        privileged: ``None`` (default) opens a raw socket when allowed, else the kernel's unprivileged ICMP
            "ping socket", else raises `RawSocketPermissionError`; ``True`` forces a raw socket, ``False``
            a ping socket.
        resolve_dns_default: Look up the reverse DNS names of traceroute and mtr hops unless a call says
            otherwise (default False).
        source: Local address to send from (bound on the sockets of its own family).
        ttl: TTL / hop limit of echo requests, 1–255 (default 64); calls may override it.
        payload_size: Payload bytes after the 8-byte ICMP header (default 56); calls may override it.
        rate: A cap in packets per second on everything the client sends, all calls together; ``None``
            (default) or 0 for no cap.
        accept_weak: Accept ICMP errors whose quote is too short to carry the probe's whole signature
            (RFC 792 asks routers for only the IP header and 8 bytes), matched on identifier, sequence and
            checksum; their results say ``weak=True`` (default True). ``False`` drops them (counted in
            `EngineStats.refused`): a router that quotes so little then looks silent.
        interface: Default interface to send out of (see `ping`); each call may override it.
        tos: Default TOS byte / traffic class, 0–255 (see `ping`).
        dont_fragment: Default DF mode (see `ping`).
        mark: Default firewall mark, raw sockets only (see `ping`). Such options ride on each packet, so
            calls with different options still share the family's socket (IPv4's ``dont_fragment``
            excepted: one more socket per mode).

    Raises:
        ValueError: An argument is out of range (``TypeError`` for one of the wrong type).
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        privileged: bool | None = None,
        resolve_dns_default: bool = False,
        source: str | None = None,
        ttl: int = 64,
        payload_size: int = 56,
        rate: float | None = None,
        accept_weak: bool = True,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> None:
        self.timeout = check_timeout(timeout)
        if privileged not in (None, True, False):
            raise ValueError("privileged must be None, True or False")
        self.privileged = privileged
        self.resolve_dns_default = bool(resolve_dns_default)
        self.source = source
        self.ttl = check_int(ttl, "ttl", 1, 255)
        self.payload_size = check_payload(payload_size, v6=True)
        self.rate = check_rate(rate)
        self.accept_weak = bool(accept_weak)
        self._options = check_options(interface=interface, tos=tos, dont_fragment=dont_fragment, mark=mark)
        self._engine: Engine | None = None
        self._task_group: TaskGroup | None = None
        self._host: int | None = None  # the task that entered the task group (only it may leave it)
        self._runner: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None  # set when the runner has ended (created on entry)
        self._closed = False
        self._reverse = ReverseResolver()

    # ------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClientClosedError("this client was closed; create a new one")
        if self._task_group is not None:
            raise RuntimeError("this client is already open")
        # The task group is entered here, in the opening ("host") task, but the engine's tasks run one level
        # down, under a runner task with a cancel scope of its own: closing cancels that scope only, so it
        # works from any task of the loop and never cancels the host's own code (see `aclose`).
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._host = anyio.get_current_task().id
        self._stopped = anyio.Event()
        try:
            await task_group.start(self._run_engine)
        except BaseException:
            self._task_group = None
            await task_group.__aexit__(None, None, None)
            raise
        return self

    async def _run_engine(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The runner: owns the engine's reader and timer tasks until the client closes."""
        try:
            async with anyio.create_task_group() as tasks:
                self._runner = tasks.cancel_scope
                self._engine = Engine(
                    privileged=self.privileged,
                    source=self.source,
                    ttl=self.ttl,
                    rate=self.rate,
                    spawn=tasks.start_soon,
                    accept_weak=self.accept_weak,
                )
                tasks.start_soon(self._engine.run_timer)
                task_status.started()
        finally:
            assert self._stopped is not None
            self._stopped.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the sockets and end every pending call with `ClientClosedError`.

        Safe from any task of the client's event loop (a shutdown handler, a watchdog, a task woken by a
        signal) as well as from the one that opened it: the calls still waiting end with
        `ClientClosedError`, the opening task's code is not cancelled, and when ``aclose`` returns the
        engine's tasks have ended and its sockets are closed. Idempotent; concurrent calls all return once
        the client is closed. ``async with`` calls it on the way out.
        """
        if not self._closed:
            self._closed = True
            if self._engine is not None:
                self._engine.abort(ClientClosedError("the client was closed while this call was waiting"))
            if self._runner is not None:
                self._runner.cancel()
        if self._task_group is None or self._stopped is None:
            return
        try:
            # Ends promptly: its tasks are cancelled (shielded, so that a caller cancelled meanwhile still
            # leaves nothing running).
            with anyio.CancelScope(shield=True):
                await self._stopped.wait()
        finally:
            if self._engine is not None:
                self._engine.close_sockets()
        # The task group can only be left by the task that entered it: that task's `__aexit__` (or its own
        # `aclose`) does it; by then nothing runs in it.
        task_group = self._task_group
        if anyio.get_current_task().id == self._host:
            self._task_group = None
            await task_group.__aexit__(None, None, None)

    @property
    def closed(self) -> bool:
        """True once `aclose` has run (or the ``async with`` block was left)."""
        return self._closed

    @property
    def stats(self) -> EngineStats:
        """Counters of packets sent, matched and dropped (foreign, forged, late, duplicate, malformed).

        A snapshot, taken when read; ``socket_kinds`` tells whether the client got raw or ping sockets.
        """
        return self._require_engine(check_closed=False).stats()

    def _require_engine(self, *, check_closed: bool = True) -> Engine:
        if self._closed and check_closed:
            raise ClientClosedError("the client is closed")
        if self._engine is None:
            raise RuntimeError(
                "AsyncClient is not open: use `async with icmpx.AsyncClient() as client:` "
                "(or `await client.__aenter__()`)"
            )
        return self._engine

    async def open_socket(self, family: int = 4) -> str:
        """Open the family's ICMP socket now (it is otherwise opened on first use) and say which kind it is.

        Calling it first makes a missing permission fail before anything is printed or sent. Which kinds
        are open is also in `stats` (``stats.socket_kinds``), a snapshot that opens nothing.

        Args:
            family: 4 or 6 (or ``socket.AF_INET``/``AF_INET6``).

        Returns:
            ``"raw"`` or ``"dgram"`` (an unprivileged ping socket).

        Raises:
            RawSocketPermissionError: neither kind may be opened by this process.
        """
        v6 = normalize_family(family) == socket.AF_INET6
        return await self._require_engine().socket_kind(v6)

    socket_kind = open_socket
    """The name of `open_socket` before 0.2 (an alias)."""

    async def resolve(self, host: str, *, family: int | None = None) -> Target:
        """Resolve a host name or address literal, off the event loop, as the operations do.

        Address literals never reach the resolver. The result is a named tuple
        ``(host, addr, v6, sockaddr)``; ``addr`` is what the operations would send to.

        Args:
            host: A name or an IPv4 / IPv6 address literal.
            family: 4 or 6 (or ``socket.AF_INET`` / ``AF_INET6``) to choose; ``None`` takes the first
                address ``getaddrinfo`` returns.

        Raises:
            NameResolutionError: The name does not resolve (to an address of that family).
            ValueError: ``host`` is empty, or a literal of the other family than ``family``.
        """
        return await resolve(host, family)

    async def reverse_dns(self, addr: str) -> str | None:
        """The reverse DNS name of ``addr`` (cached, bounded in time), ``None`` when there is none.

        Lookups run in a worker thread and give up after 2 seconds; failures are ``None``, never raised.
        """
        return await self._reverse.lookup(addr)

    # ------------------------------------------------------------------------------------ operations

    async def probe(
        self,
        host: str,
        *,
        ttl: int | None = None,
        timeout: float | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> EchoResult:
        """Send one echo request at ``ttl`` and return its `EchoResult`.

        A router's Time Exceeded is a normal result: ``error == "time-exceeded"`` and the router in
        ``reply.received_packet.ip_header.src_addr``.

        Args:
            host: A name or an address literal.
            ttl: TTL / hop limit of this echo (default: the client's).
            timeout: Seconds to wait for the answer (default: the client's).
            payload_size: Payload bytes (default: the client's).
            family: 4 or 6 for a name that resolves to both.
            source: As for `ping`.
            interface: As for `ping`.
            tos: As for `ping`.
            dont_fragment: As for `ping`.
            mark: As for `ping`.

        Returns:
            The outcome: an echo reply, an ICMP error or ``error="timeout"``.

        Raises:
            NameResolutionError: ``host`` does not resolve.
            ValueError: An argument is out of range.
            ClientClosedError: The client is (or was, during the call) closed.
        """
        results = await self.ping(
            host,
            count=1,
            interval=0,
            ttl=ttl,
            timeout=timeout,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )
        return results[0]

    async def ping(
        self,
        host: str,
        *,
        count: int = 4,
        interval: float = 1.0,
        timeout: float | None = None,
        ttl: int | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> list[EchoResult]:
        """Ping ``host`` ``count`` times, ``interval`` seconds apart; results in sequence order.

        Echoes go out on schedule without waiting for earlier replies, as ping(8) does; each waits up to
        ``timeout`` seconds for its answer. Summarise the list with `PingStats.from_results`.

        Args:
            host: A name or an address literal.
            count: Echo requests to send, at least 1 (default 4).
            interval: Seconds between the sends, 0 or more (default 1.0).
            timeout: Seconds each echo waits for its answer (default: the client's).
            ttl: TTL / hop limit (default: the client's).
            payload_size: Payload bytes (default: the client's).
            family: 4 or 6 for a name that resolves to both.
            source: Source address of these echoes (``IP_PKTINFO``; must be this host's, of the
                target's family).
            interface: Send out of this interface (by name; the ifindex of ``IP_PKTINFO``).
            tos: TOS byte (IPv4) / traffic class (IPv6), 0–255, e.g. ``0xb8`` for DSCP EF.
            dont_fragment: ``True``/``"do"`` never fragment (DF), ``False``/``"dont"`` allow it,
                ``"want"`` the kernel's default.
            mark: Firewall mark (``SO_MARK``) for policy routing; raw sockets only.

        Returns:
            One `EchoResult` per echo, in sending order (each request records the options used).

        Raises:
            NameResolutionError: ``host`` does not resolve.
            ValueError: An argument is out of range.
            ClientClosedError: The client is (or was, during the call) closed.
        """
        async with aclosing(
            self.iter_ping(
                host,
                count=count,
                interval=interval,
                timeout=timeout,
                ttl=ttl,
                payload_size=payload_size,
                family=family,
                source=source,
                interface=interface,
                tos=tos,
                dont_fragment=dont_fragment,
                mark=mark,
            )
        ) as results:
            return [result async for result in results]

    def iter_ping(
        self,
        host: str,
        *,
        count: int = 4,
        interval: float = 1.0,
        timeout: float | None = None,
        ttl: int | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> AsyncGenerator[EchoResult, None]:
        """Like `ping`, but yields each result as soon as it and the ones before it are known.

        Takes the same arguments as `ping`. Not a coroutine: iterate over what it returns. Arguments are
        checked when it is called (``ValueError`` before anything is sent); leaving the loop early stops
        sending. Results flow while the series is being sent (with ``interval=0`` too), and memory follows
        what is in flight, so ``count`` may be as large as you like.

        Yields:
            One `EchoResult` per echo, in sending order.
        """
        options = self._echo_options(count=count, interval=interval, timeout=timeout, ttl=ttl)
        size = self.payload_size if payload_size is None else check_int(payload_size, "payload_size", 0)
        normalize_family(family)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        return self._iter_ping(host, family, size, options, asked)

    async def _iter_ping(
        self,
        host: str,
        family: int | None,
        size: int,
        options: dict[str, Any],
        asked: ProbeOptions | None,
    ) -> AsyncGenerator[EchoResult, None]:
        from ._ping import iter_series

        engine = self._require_engine()
        target = await resolve(host, family)
        check_payload(size, target.v6)
        send_options = await engine.send_options(asked, target.v6)
        series = iter_series(engine, target, payload_size=size, options=send_options, **options)
        async with aclosing(series):
            async for result in series:
                yield result

    async def traceroute(
        self,
        host: str,
        *,
        max_hops: int = 30,
        first_hop: int = 1,
        probes: int = 3,
        timeout: float | None = None,
        resolve_dns: bool | None = None,
        paris: bool = True,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> TracerouteResult:
        """Trace the path to ``host``: one `Hop` per TTL from ``first_hop`` to the destination.

        Probes for every TTL go out at once on the shared socket (paced by the client's ``rate``), so a
        trace takes about one ``timeout`` however many hops are silent. Silent hops are reported with
        ``addr=None``; hops past the destination are not. ``paris`` keeps every probe's ICMP checksum equal,
        so per-flow load balancers keep the whole trace on one path; every responder is kept in
        ``Hop.addrs``. ``resolve_dns`` (default: the client's ``resolve_dns_default``) fills
        ``Hop.hostname`` by reverse DNS, cached and bounded in time.

        Args:
            host: A name or an address literal.
            max_hops: Highest TTL to probe, 1–255 (default 30).
            first_hop: Lowest TTL to probe (default 1).
            probes: Probes per TTL, 1–100 (default 3).
            timeout: Seconds each probe waits for its answer (default: the client's).
            resolve_dns: Reverse DNS of the hops (default: the client's ``resolve_dns_default``).
            paris: Keep every probe on one path through per-flow load balancers (default True).
            payload_size: Payload bytes (default: the client's).
            family: 4 or 6 for a name that resolves to both.
            source: As for `ping`.
            interface: As for `ping`.
            tos: As for `ping`.
            dont_fragment: As for `ping`.
            mark: As for `ping`.

        Returns:
            The hops from ``first_hop`` to the destination (or ``max_hops``), silent ones included.

        Raises:
            NameResolutionError: ``host`` does not resolve.
            ValueError: An argument is out of range.
            ClientClosedError: The client is (or was, during the call) closed.
        """
        options = self._trace_options(max_hops, first_hop, probes, timeout, resolve_dns, paris, payload_size)
        normalize_family(family)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        engine = self._require_engine()
        target = await resolve(host, family)
        check_payload(options["payload_size"], target.v6)
        send_options = await engine.send_options(asked, target.v6)
        from ._traceroute import traceroute

        return await traceroute(engine, target, options=send_options, **options)

    def iter_traceroute(
        self,
        host: str,
        *,
        max_hops: int = 30,
        first_hop: int = 1,
        probes: int = 3,
        timeout: float | None = None,
        resolve_dns: bool | None = None,
        paris: bool = True,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> AsyncGenerator[Hop, None]:
        """Like `traceroute`, but yields each `Hop` as soon as it and every hop below it are complete.

        The same trace, hop by hop as traceroute(8) prints it: a program can show the path as it is
        found, and keep what it has when it stops early. Takes the same arguments as `traceroute`. Not a
        coroutine: iterate over what it returns; arguments are checked when it is called.

        Yields:
            One `Hop` per TTL from ``first_hop`` to the destination (or ``max_hops``), lowest first.
        """
        options = self._trace_options(max_hops, first_hop, probes, timeout, resolve_dns, paris, payload_size)
        normalize_family(family)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        return self._iter_traceroute(host, family, options, asked)

    async def _iter_traceroute(
        self, host: str, family: int | None, options: dict[str, Any], asked: ProbeOptions | None
    ) -> AsyncGenerator[Hop, None]:
        from ._traceroute import iter_hops

        engine = self._require_engine()
        target = await resolve(host, family)
        check_payload(options["payload_size"], target.v6)
        send_options = await engine.send_options(asked, target.v6)
        async with aclosing(iter_hops(engine, target, options=send_options, **options)) as hops:
            async for hop in hops:
                yield hop

    def _trace_options(
        self,
        max_hops: int,
        first_hop: int,
        probes: int,
        timeout: float | None,
        resolve_dns: bool | None,
        paris: bool,
        payload_size: int | None,
    ) -> dict[str, Any]:
        check_int(max_hops, "max_hops", 1, 255)
        check_int(first_hop, "first_hop", 1, max_hops)
        check_int(probes, "probes", 1, 100)
        dns = self.resolve_dns_default if resolve_dns is None else bool(resolve_dns)
        return {
            "max_hops": max_hops,
            "first_hop": first_hop,
            "probes": probes,
            "timeout": self.timeout if timeout is None else check_timeout(timeout),
            "payload_size": (
                self.payload_size if payload_size is None else check_int(payload_size, "payload_size", 0)
            ),
            "paris": bool(paris),
            "resolver": self._reverse if dns else None,
        }

    async def path_mtu(
        self,
        host: str,
        *,
        timeout: float | None = None,
        max_hops: int = 30,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        mark: int | None = None,
    ) -> PathMtu:
        """The path MTU to ``host`` and the hop where it drops (tracepath's job).

        Probes of many sizes go out at once with DF set, on one more socket of the family that ignores the
        path MTU the kernel has cached (so a learnt or stale value never decides the answer): Fragmentation
        Needed / Packet Too Big messages give the next-hop MTU; where a router drops large packets silently,
        the sizes are bisected (one ``timeout`` per round). Then probes one byte too large go to every TTL
        at once to find the router that stops them. A few rounds in all.

        Args:
            host: A name or an address literal.
            timeout: Seconds each probe waits for its answer (default: the client's).
            max_hops: Highest TTL searched for the hop, 1–255 (default 30).
            family: 4 or 6 for a name that resolves to both.
            source: As for `ping`.
            interface: As for `ping`.
            tos: As for `ping`.
            mark: As for `ping`.

        Returns:
            A `PathMtu`: ``mtu`` in bytes (whole IP packets), ``hop`` / ``hop_addr`` the router before the
            narrowest link, ``reported`` whether a router said so.

        Raises:
            NameResolutionError: ``host`` does not resolve.
            ValueError: An argument is out of range.
            ClientClosedError: The client is (or was, during the call) closed.
        """
        wait = self.timeout if timeout is None else check_timeout(timeout)
        check_int(max_hops, "max_hops", 1, 255)
        normalize_family(family)
        asked = self._probe_options(source, interface, tos, None, mark)
        engine = self._require_engine()
        target = await resolve(host, family)
        from ._pmtu import path_mtu

        return await path_mtu(engine, target, timeout=wait, max_hops=max_hops, ttl=self.ttl, asked=asked)

    def mtr(
        self,
        host: str,
        *,
        cycles: int | None = None,
        interval: float = 1.0,
        max_hops: int = 30,
        timeout: float | None = None,
        resolve_dns: bool | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> AsyncGenerator[MtrReport, None]:
        """Live per-hop statistics, as mtr shows them: an `MtrReport` after every cycle.

        Each cycle probes every TTL up to the destination at once; cycles start ``interval`` seconds apart
        (they overlap when ``timeout`` is longer). ``cycles=None`` runs until you stop iterating; leaving the
        loop stops all probing:

            async for report in client.mtr("127.0.0.1", cycles=10, interval=0.5):
                print(report.cycle, [(h.ttl, h.addr, h.loss_pct, h.avg) for h in report.hops])

        Not a coroutine: call it without ``await`` and iterate over what it returns. The arguments are
        checked at once; the name is resolved on the first iteration.

        Args:
            host: A name or an address literal.
            cycles: Cycles to run, at least 1; ``None`` (default) for no end.
            interval: Seconds between the starts of consecutive cycles (default 1.0).
            max_hops: Highest TTL to probe, 1–255 (default 30).
            timeout: Seconds each probe waits for its answer (default: the client's).
            resolve_dns: Reverse DNS of the hops (default: the client's ``resolve_dns_default``).
            payload_size: Payload bytes (default: the client's).
            family: 4 or 6 for a name that resolves to both.
            source: As for `ping`.
            interface: As for `ping`.
            tos: As for `ping`.
            dont_fragment: As for `ping`.
            mark: As for `ping`.

        Yields:
            One `MtrReport` per completed cycle, in cycle order, with the statistics so far.

        Raises:
            NameResolutionError: ``host`` does not resolve (from the first iteration).
            ValueError: An argument is out of range.
            ClientClosedError: The client is (or was, during the run) closed.
        """
        if cycles is not None:
            check_int(cycles, "cycles", 1)
        wait = self.timeout if timeout is None else check_timeout(timeout)
        every = check_timeout(interval, "interval", None)  # > 0: a cycle per interval, never a flood
        check_int(max_hops, "max_hops", 1, 255)
        size = self.payload_size if payload_size is None else check_payload(payload_size, v6=True)
        normalize_family(family)
        dns = self.resolve_dns_default if resolve_dns is None else bool(resolve_dns)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        return self._mtr(host, family, cycles, every, max_hops, wait, size, dns, asked)

    async def _mtr(
        self,
        host: str,
        family: int | None,
        cycles: int | None,
        interval: float,
        max_hops: int,
        timeout: float,
        size: int,
        dns: bool,
        asked: ProbeOptions | None = None,
    ) -> AsyncGenerator[MtrReport, None]:
        from ._mtr import mtr

        engine = self._require_engine()
        target = await resolve(host, family)
        check_payload(size, target.v6)
        send_options = await engine.send_options(asked, target.v6)
        reports = mtr(
            engine,
            target,
            cycles=cycles,
            interval=interval,
            max_hops=max_hops,
            timeout=timeout,
            payload_size=size,
            resolver=self._reverse if dns else None,
            options=send_options,
        )
        async with aclosing(reports):
            async for report in reports:
                yield report

    async def multiping(
        self,
        targets: Iterable[str],
        *,
        count: int = 1,
        interval: float = 1.0,
        timeout: float | None = None,
        rate: float | None = DEFAULT_SWEEP_RATE,
        ttl: int | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> list[PingStats]:
        """Ping many targets ``count`` times each; one `PingStats` per target, in input order.

        ``interval`` is the time between echoes to the *same* target (fping's ``-p``); ``rate`` paces the
        whole sweep in packets per second (default 1,000, gentle on real networks; ``None`` or 0 sends as
        fast as the kernel takes them), under the client's own ``rate`` cap. Names are resolved
        concurrently; a name that does not resolve gets a row with ``error`` set instead of an exception.

        Args:
            targets: Names or address literals (any iterable of strings, not one string); IPv4 and IPv6
                may be mixed, and the same host may appear more than once.
            count: Echo requests per target, at least 1 (default 1).
            interval: Seconds between echoes to the same target (default 1.0).
            timeout: Seconds each echo waits for its answer (default: the client's).
            rate: Packets per second for the whole sweep (default 1,000); ``None`` or 0 for no pacing.
            ttl: TTL / hop limit (default: the client's).
            payload_size: Payload bytes (default: the client's).
            family: 4 or 6 for names that resolve to both.
            source: As for `ping`. (A sweep with options sends one ``sendmsg`` per probe instead of
                ``sendmmsg`` batches.)
            interface: As for `ping`.
            tos: As for `ping`.
            dont_fragment: As for `ping`.
            mark: As for `ping`.

        Returns:
            One `PingStats` per target, in input order.

        Raises:
            ValueError: An argument is out of range (``TypeError`` for a target that is not a string).
            ClientClosedError: The client is (or was, during the call) closed.
        """
        hosts = self._hosts(targets)
        engine, options = self._sweep_options(count, interval, timeout, rate, ttl, payload_size, family)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        from ._multiping import collect

        return await collect(engine, hosts, options=asked, **options)

    def iter_multiping(
        self,
        targets: Iterable[str],
        *,
        count: int = 1,
        interval: float = 1.0,
        timeout: float | None = None,
        rate: float | None = DEFAULT_SWEEP_RATE,
        ttl: int | None = None,
        payload_size: int | None = None,
        family: int | None = None,
        source: str | None = None,
        interface: str | None = None,
        tos: int | None = None,
        dont_fragment: bool | str | None = None,
        mark: int | None = None,
    ) -> AsyncGenerator[PingStats, None]:
        """Like `multiping`, but yields each target's `PingStats` as soon as it is complete.

        A target is complete when all its echoes are answered or timed out, so rows come in completion
        order (unresolved names first) and a monitor can act before the sweep ends:

            async for stats in client.iter_multiping(hosts, count=3):
                if stats.loss_pct == 100: alert(stats.target)

        Takes the same arguments as `multiping`. Not a coroutine: iterate over what it returns. Leaving the
        loop early stops the sweep.

        Yields:
            One `PingStats` per target, in completion order.
        """
        hosts = self._hosts(targets)
        engine, options = self._sweep_options(count, interval, timeout, rate, ttl, payload_size, family)
        asked = self._probe_options(source, interface, tos, dont_fragment, mark)
        from ._multiping import stream

        return stream(engine, hosts, options=asked, **options)

    def _sweep_options(
        self,
        count: int,
        interval: float,
        timeout: float | None,
        rate: float | None,
        ttl: int | None,
        payload_size: int | None,
        family: int | None,
    ) -> tuple[Engine, dict[str, Any]]:
        options = self._echo_options(count=count, interval=interval, timeout=timeout, ttl=ttl)
        options["payload_size"] = (
            self.payload_size if payload_size is None else check_payload(payload_size, v6=True)
        )
        options["rate"] = check_rate(rate)
        options["family"] = family
        normalize_family(family)
        return self._require_engine(), options

    def _probe_options(
        self,
        source: str | None,
        interface: str | None,
        tos: int | None,
        dont_fragment: bool | str | None,
        mark: int | None,
    ) -> ProbeOptions | None:
        """A call's per-probe options over the client's defaults, checked (``ValueError`` before sending)."""
        asked = check_options(
            source=source, interface=interface, tos=tos, dont_fragment=dont_fragment, mark=mark
        )
        return merge_options(self._options, asked)

    @staticmethod
    def _hosts(targets: Iterable[str]) -> list[str]:
        if isinstance(targets, str | bytes):
            raise TypeError("targets must be an iterable of host strings, not a single string")
        hosts = list(targets)
        for host in hosts:
            if not isinstance(host, str):
                raise TypeError(f"every target must be a string, not {host!r}")
        return hosts

    def _echo_options(
        self, *, count: int, interval: float, timeout: float | None, ttl: int | None
    ) -> dict[str, Any]:
        return {
            "count": check_int(count, "count", 1),
            "interval": check_interval(interval),
            "timeout": self.timeout if timeout is None else check_timeout(timeout),
            "ttl": self.ttl if ttl is None else check_int(ttl, "ttl", 1, 255),
        }
