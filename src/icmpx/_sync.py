"""Client: the blocking facade. Every method runs the `AsyncClient` one in a private event loop thread."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._client import AsyncClient
from ._exceptions import ClientClosedError
from ._models import EchoResult, EngineStats, MtrReport, PingStats, Target, TracerouteResult

__all__ = ["Client"]

P = ParamSpec("P")
T = TypeVar("T")


class _DaemonPortal:
    """An event loop in a thread of its own, reached through a blocking portal.

    Like anyio's ``start_blocking_portal``, except that the thread is a daemon and nothing is cleaned up
    implicitly (no generator finaliser, no atexit hook): a `Client` the program forgets to close does not
    keep the interpreter from exiting; the kernel closes its sockets then.
    """

    def __init__(self, backend: str) -> None:
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
                print(result.request.addr, result.reply.rtt if result.reply else result.error)

    It runs an event loop in a background thread (an anyio blocking portal) for its whole life; use it as a
    context manager, or call `close()`: until it is closed, that thread keeps the process from exiting.
    Iterators it returns (``iter_ping``, ``iter_multiping``, ``mtr``) are plain iterators. Once it is open,
    its methods may be called from several threads at once; they all share the client's sockets.

    Args:
        backend: The anyio backend of the background loop: ``"asyncio"`` (default) or ``"trio"``.
        **options: The keyword arguments of `AsyncClient` (``timeout``, ``privileged``,
            ``resolve_dns_default``, ``source``, ``ttl``, ``payload_size``, ``rate``).
    """

    def __init__(self, *, backend: str = "asyncio", **options: Any) -> None:
        self._async = AsyncClient(**options)
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

    def probe(self, host: str, **options: Any) -> EchoResult:
        """Send one echo request and return its `EchoResult`; arguments as `AsyncClient.probe`."""
        return self._call(self._async.probe, host, **options)

    def ping(self, host: str, **options: Any) -> list[EchoResult]:
        """Ping ``host`` ``count`` times; a list of `EchoResult`, arguments as `AsyncClient.ping`."""
        return self._call(self._async.ping, host, **options)

    def iter_ping(self, host: str, **options: Any) -> Iterator[EchoResult]:
        """Like `ping`, one `EchoResult` at a time; a plain iterator, arguments as `AsyncClient.ping`."""
        return self._iterate(self._async.iter_ping(host, **options))

    def traceroute(self, host: str, **options: Any) -> TracerouteResult:
        """Trace the path to ``host``; a `TracerouteResult`, arguments as `AsyncClient.traceroute`."""
        return self._call(self._async.traceroute, host, **options)

    def multiping(self, targets: Any, **options: Any) -> list[PingStats]:
        """Ping many targets; one `PingStats` each, in input order; arguments as `AsyncClient.multiping`."""
        return self._call(self._async.multiping, targets, **options)

    def iter_multiping(self, targets: Any, **options: Any) -> Iterator[PingStats]:
        """Like `multiping`, rows in completion order; a plain iterator (see `AsyncClient.iter_multiping`)."""
        return self._iterate(self._async.iter_multiping(targets, **options))

    def mtr(self, host: str, **options: Any) -> Iterator[MtrReport]:
        """An `MtrReport` per cycle, as `AsyncClient.mtr`; a plain iterator (leaving it stops probing)."""
        return self._iterate(self._async.mtr(host, **options))

    def resolve(self, host: str, *, family: int | None = None) -> Target:
        """See `AsyncClient.resolve`."""
        return self._call(self._async.resolve, host, family=family)

    def socket_kind(self, family: int = 4) -> str:
        """See `AsyncClient.socket_kind`."""
        return self._call(self._async.socket_kind, family)

    def reverse_dns(self, addr: str) -> str | None:
        """The reverse DNS name of ``addr``, ``None`` when there is none; see `AsyncClient.reverse_dns`."""
        return self._call(self._async.reverse_dns, addr)
