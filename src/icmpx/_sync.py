"""Client: the blocking facade. Every method runs the `AsyncClient` one in a private event loop thread.

Each method spells out the same parameters as its `AsyncClient` twin (so type checkers and IDEs check
every call) and forwards them; ``tests/test_sync.py`` holds the two signatures equal, so a keyword added
to `AsyncClient` fails the tests until `Client` has it too.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

from ._client import AsyncClient
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

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from ._pmtu import PathMtu

__all__ = ["BACKENDS", "Client"]

BACKENDS = ("asyncio", "trio")
"""The anyio backends a `Client` can run its event loop on."""

P = ParamSpec("P")
T = TypeVar("T")


class _DaemonPortal:
    """An event loop in a thread of its own, reached through a blocking portal.

    Like anyio's ``start_blocking_portal``, except that the thread is a daemon and nothing is cleaned up
    implicitly (no generator finaliser, no atexit hook): a `Client` the program forgets to close does not
    keep the interpreter from exiting; the kernel closes its sockets then.
    """

    def __init__(self, backend: str) -> None:
        import anyio
        from anyio.from_thread import BlockingPortal  # loaded on first use: start-up time

        ready: concurrent.futures.Future[BlockingPortal] = concurrent.futures.Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve, backend=backend)
            except BaseException as exc:  # the loop could not start: tell the thread waiting below
                if not ready.done():
                    ready.set_exception(exc)

        self._thread = threading.Thread(target=run, name="icmpx-client", daemon=True)
        self._thread.start()
        self.portal = ready.result()

    def close(self) -> None:
        try:
            self.portal.call(self.portal.stop)
        finally:
            self._thread.join()


class Client:
    """Blocking ICMP client with the same operations and keywords as `AsyncClient`.

    For scripts and threads without an event loop:

        with icmpx.Client(timeout=1.5) as client:
            for result in client.ping("127.0.0.1", count=3):
                print(result.position, result.rtt if result.ok else result.error)

    It runs an event loop in a background thread (an anyio blocking portal) for its whole life; use it as a
    context manager, or call `close()`: until it is closed, that thread keeps the process from exiting.
    Iterators it returns (``iter_ping``, ``iter_multiping``, ``mtr``) are plain iterators. Once it is open,
    its methods may be called from several threads at once; they all share the client's sockets.

    Args:
        timeout: Seconds to wait for the answer to each echo request (default 2.0); calls may override it.
        privileged: ``None`` (default): a raw socket when allowed, else a ping socket; ``True`` / ``False``
            force one kind (see `AsyncClient`).
        resolve_dns_default: Reverse DNS of traceroute and mtr hops unless a call says otherwise.
        source: Local address to send from.
        ttl: TTL / hop limit of echo requests, 1–255 (default 64).
        payload_size: Payload bytes after the 8-byte ICMP header (default 56).
        rate: A cap in packets per second on everything the client sends; ``None`` or 0 for no cap.
        accept_weak: Accept ICMP errors matched on a short quote, flagged ``weak=True`` (default True;
            see `AsyncClient`).
        interface: Defaults of the per-probe options (see `AsyncClient`).
        tos: Defaults of the per-probe options (see `AsyncClient`).
        dont_fragment: Defaults of the per-probe options (see `AsyncClient`).
        mark: Defaults of the per-probe options (see `AsyncClient`).
        backend: The anyio backend of the background loop: ``"asyncio"`` (default) or ``"trio"``.

    Raises:
        ValueError: An argument is out of range, or ``backend`` is not one of `BACKENDS`.
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
        backend: str = "asyncio",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
        self._async = AsyncClient(
            timeout=timeout,
            privileged=privileged,
            resolve_dns_default=resolve_dns_default,
            source=source,
            ttl=ttl,
            payload_size=payload_size,
            rate=rate,
            accept_weak=accept_weak,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )
        self._backend = backend
        self._loop: _DaemonPortal | None = None
        self._portal: BlockingPortal | None = None
        self._client_cm: AbstractContextManager[AsyncClient] | None = None
        self._closed = False

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the event loop thread and open the client (done by ``with`` or on first use)."""
        if self._closed:
            raise ClientClosedError("this client was closed; create a new one")
        if self._portal is not None:
            return
        self._loop = _DaemonPortal(self._backend)
        self._portal = self._loop.portal
        try:
            self._client_cm = self._portal.wrap_async_context_manager(self._async)
            self._client_cm.__enter__()
        except BaseException:
            self._loop.close()
            self._portal = self._loop = None
            raise

    def close(self) -> None:
        """Close the client and stop its event loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._client_cm is not None:
                self._client_cm.__exit__(None, None, None)
        finally:
            if self._loop is not None:
                self._loop.close()
            self._portal = self._loop = self._client_cm = None

    @property
    def closed(self) -> bool:
        """True once `close` has run (or the ``with`` block was left)."""
        return self._closed

    def _portal_or_open(self) -> BlockingPortal:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._portal is None:
            self.open()
        assert self._portal is not None
        return self._portal

    def _call(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        portal = self._portal_or_open()
        return portal.call(functools.partial(func, *args, **kwargs))

    def _iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        portal = self._portal_or_open()
        try:
            while True:
                try:
                    yield portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self._portal is not None:
                portal.call(aclose)

    @property
    def stats(self) -> EngineStats:
        """Counters of packets sent, matched and dropped; see `AsyncClient.stats`."""
        return self._async.stats

    # Every operation below takes exactly the parameters of its AsyncClient twin (tests/test_sync.py).

    def probe(
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
        """Send one echo request and return its `EchoResult`; arguments as `AsyncClient.probe`."""
        return self._call(
            self._async.probe,
            host,
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

    def ping(
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
        """Ping ``host`` ``count`` times; a list of `EchoResult`, arguments as `AsyncClient.ping`."""
        return self._call(
            self._async.ping,
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
    ) -> Iterator[EchoResult]:
        """Like `ping`, one `EchoResult` at a time; a plain iterator, arguments as `AsyncClient.ping`."""
        agen = self._async.iter_ping(
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
        return self._iterate(agen)

    def traceroute(
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
        """Trace the path to ``host``; a `TracerouteResult`, arguments as `AsyncClient.traceroute`."""
        return self._call(
            self._async.traceroute,
            host,
            max_hops=max_hops,
            first_hop=first_hop,
            probes=probes,
            timeout=timeout,
            resolve_dns=resolve_dns,
            paris=paris,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )

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
    ) -> Iterator[Hop]:
        """Like `traceroute`, one `Hop` at a time as each is complete (see `AsyncClient.iter_traceroute`)."""
        agen = self._async.iter_traceroute(
            host,
            max_hops=max_hops,
            first_hop=first_hop,
            probes=probes,
            timeout=timeout,
            resolve_dns=resolve_dns,
            paris=paris,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )
        return self._iterate(agen)

    def multiping(
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
        """Ping many targets; one `PingStats` each, in input order; arguments as `AsyncClient.multiping`."""
        return self._call(
            self._async.multiping,
            targets,
            count=count,
            interval=interval,
            timeout=timeout,
            rate=rate,
            ttl=ttl,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )

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
    ) -> Iterator[PingStats]:
        """Like `multiping`, rows in completion order; a plain iterator (see `AsyncClient.iter_multiping`)."""
        agen = self._async.iter_multiping(
            targets,
            count=count,
            interval=interval,
            timeout=timeout,
            rate=rate,
            ttl=ttl,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )
        return self._iterate(agen)

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
    ) -> Iterator[MtrReport]:
        """An `MtrReport` per cycle, as `AsyncClient.mtr`; a plain iterator (leaving it stops probing)."""
        agen = self._async.mtr(
            host,
            cycles=cycles,
            interval=interval,
            max_hops=max_hops,
            timeout=timeout,
            resolve_dns=resolve_dns,
            payload_size=payload_size,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            dont_fragment=dont_fragment,
            mark=mark,
        )
        return self._iterate(agen)

    def path_mtu(
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
        """The path MTU to ``host`` and the hop where it drops; arguments as `AsyncClient.path_mtu`."""
        return self._call(
            self._async.path_mtu,
            host,
            timeout=timeout,
            max_hops=max_hops,
            family=family,
            source=source,
            interface=interface,
            tos=tos,
            mark=mark,
        )

    def resolve(self, host: str, *, family: int | None = None) -> Target:
        """See `AsyncClient.resolve`."""
        return self._call(self._async.resolve, host, family=family)

    def open_socket(self, family: int = 4) -> str:
        """Open the family's ICMP socket now and say which kind it is; see `AsyncClient.open_socket`."""
        return self._call(self._async.open_socket, family)

    socket_kind = open_socket
    """The name of `open_socket` before 0.2 (an alias)."""

    def reverse_dns(self, addr: str) -> str | None:
        """The reverse DNS name of ``addr``, ``None`` when there is none; see `AsyncClient.reverse_dns`."""
        return self._call(self._async.reverse_dns, addr)
