"""Closing a client from anywhere in its event loop: another task, a watchdog, a signal handler's task.

Every pending call must end with `ClientClosedError`; the task that opened the client (``async with``) must
go on undisturbed (no RuntimeError, no cancellation), and nothing may be left behind: no pending probe, no
ICMP socket. Each test runs on asyncio, asyncio + uvloop and trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import icmpx
from netns import icmp_socket_count

pytestmark = [pytest.mark.anyio, pytest.mark.lab]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    return request.param  # type: ignore[no-any-return]


async def _until(condition: Callable[[], bool], bound: float = 5.0) -> None:
    with anyio.fail_after(bound):
        while not condition():  # noqa: ASYNC110 -- polls a counter, bounded by fail_after
            await anyio.sleep(0.005)


class _Calls:
    """Pending calls of every kind on one client, and how each of them ended."""

    def __init__(self, client: icmpx.AsyncClient) -> None:
        self.client = client
        self.outcomes: list[BaseException | None] = []

    async def _one(self, call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except BaseException as exc:  # record everything, cancellation included
            self.outcomes.append(exc)
            if not isinstance(exc, icmpx.ClientClosedError):
                raise
        else:
            self.outcomes.append(None)

    async def _mtr(self) -> None:
        async for _ in self.client.mtr("127.0.0.9", cycles=3, interval=0.05, max_hops=3):
            pass

    def start(self, tg: anyio.abc.TaskGroup) -> int:
        c = self.client
        calls: list[Callable[[], Awaitable[object]]] = [
            *(lambda i=i: c.ping(f"127.0.0.{i + 1}", count=3, interval=0) for i in range(5)),
            lambda: c.ping("127.0.1.1", count=2, interval=60),  # between two echoes: nothing pending
            lambda: c.traceroute("127.0.0.7", max_hops=4, probes=1),
            lambda: c.multiping([f"127.0.2.{i}" for i in range(1, 40)], count=2, rate=None),
            lambda: c.multiping([f"127.0.3.{i}" for i in range(1, 40)], count=2, interval=0.01),
            self._mtr,
        ]
        for call in calls:
            tg.start_soon(self._one, call)
        return len(calls)


async def _close_from_another_task(closer: Callable[[icmpx.AsyncClient], Awaitable[None]]) -> None:
    sockets_before = icmp_socket_count()
    opened = anyio.Event()
    body_finished: list[str] = []
    holder: list[icmpx.AsyncClient] = []
    holder_calls: list[_Calls] = []
    expected: list[int] = []

    async def host() -> None:
        async with icmpx.AsyncClient(timeout=60) as client:
            holder.append(client)
            calls = _Calls(client)
            holder_calls.append(calls)
            async with anyio.create_task_group() as tg:
                expected.append(calls.start(tg))
                opened.set()
            # Every call ended; the host's own code goes on, neither cancelled nor failed.
            await anyio.lowlevel.checkpoint()
            body_finished.append("after calls")
        body_finished.append("after close")

    started = time.monotonic()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            await opened.wait()
            client = holder[0]
            await _until(lambda: client.stats.pending >= 5 * 3 + 2)
            await closer(client)
            assert client.closed
    assert time.monotonic() - started < 10
    assert body_finished == ["after calls", "after close"]
    outcomes = holder_calls[0].outcomes
    assert len(outcomes) == expected[0]
    assert all(isinstance(o, icmpx.ClientClosedError) for o in outcomes), outcomes
    assert client.stats.pending == 0
    assert icmp_socket_count() == sockets_before
    with pytest.raises(icmpx.ClientClosedError):
        await client.ping("127.0.0.1", count=1)


async def test_aclose_from_another_task(quiet: str) -> None:
    async def close(client: icmpx.AsyncClient) -> None:
        await client.aclose()

    await _close_from_another_task(close)


async def test_aclose_from_a_watchdog_task_started_in_the_clients_block(quiet: str) -> None:
    """A watchdog the host starts in a task group of its own, closing while the host's body waits."""
    sockets_before = icmp_socket_count()
    outcomes: list[BaseException] = []
    reached: list[str] = []
    with anyio.fail_after(20):
        async with icmpx.AsyncClient(timeout=60) as client:

            async def watchdog() -> None:
                await _until(lambda: client.stats.pending >= 3)
                await client.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watchdog)
                try:
                    await client.ping("127.0.0.1", count=3, interval=0)
                except icmpx.ClientClosedError as exc:
                    outcomes.append(exc)
            reached.append("body")
    assert reached == ["body"]
    assert len(outcomes) == 1
    assert client.stats.pending == 0
    assert icmp_socket_count() == sockets_before


async def test_aclose_from_a_signal_handler_task(quiet: str) -> None:
    """The usual shutdown path: a task waits for SIGTERM-like signals and closes the client."""

    async def close_on_signal(client: icmpx.AsyncClient) -> None:
        with anyio.open_signal_receiver(signal.SIGUSR1) as signals:
            os.kill(os.getpid(), signal.SIGUSR1)
            async for _ in signals:
                await client.aclose()
                return

    await _close_from_another_task(close_on_signal)


async def test_aclose_twice_from_two_tasks_at_once(quiet: str) -> None:
    async def close(client: icmpx.AsyncClient) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.aclose)
            tg.start_soon(client.aclose)

    await _close_from_another_task(close)


async def test_aclose_in_the_opening_task_without_async_with() -> None:
    """``await client.__aenter__()`` ... ``await client.aclose()`` in one task keeps working."""
    sockets_before = icmp_socket_count()
    client = icmpx.AsyncClient(timeout=1)
    await client.__aenter__()
    assert (await client.probe("127.0.0.1")).error is None
    await client.aclose()
    assert client.closed
    assert icmp_socket_count() == sockets_before
    await client.__aexit__(None, None, None)  # harmless after aclose


async def test_aclose_from_another_task_during_a_batch_send_writes_nothing_after(quiet: str) -> None:
    """A watchdog task closes the client while an unpaced sweep hands batches to the worker thread; the
    host then opens TCP connections at once (they take the lowest free descriptor numbers, the ICMP
    socket's among them): none receives a byte, and the sweep ends with `ClientClosedError`."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    connections: list[socket.socket] = []
    ended: list[BaseException] = []
    try:
        async with icmpx.AsyncClient(timeout=5) as client:

            async def sweep() -> None:
                try:
                    await client.multiping(
                        [f"127.9.{i // 250}.{i % 250 + 1}" for i in range(40_000)], rate=None
                    )
                except icmpx.ClientClosedError as exc:
                    ended.append(exc)

            async def watchdog() -> None:
                await _until(lambda: client.stats.sent >= 4096)  # batches are going out
                await client.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(sweep)
                tg.start_soon(watchdog)
            # No await between the close and the connections: only the worker thread could write.
            for _ in range(200):
                near = socket.create_connection(listener.getsockname())
                connections += [near, listener.accept()[0]]
        assert len(ended) == 1
        for conn in connections:
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                assert conn.recv(65536) == b"", "ICMP bytes written into a socket opened after close"
    finally:
        for conn in connections:
            conn.close()
        listener.close()
