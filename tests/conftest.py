"""Shared test configuration: the network-namespace lab fixtures and the ICMPX_REQUIRE_LAB rule.

Lab tests are marked ``@pytest.mark.lab``.  Where the lab cannot run (not root, no ``ip``/``nft``,
namespaces forbidden) they skip with the reason; with ``ICMPX_REQUIRE_LAB=1`` (as CI sets) they
fail instead, and so does *any* skip anywhere in the run: a green CI means everything ran.

Without root, a contributor may lack ICMP sockets too: no ``CAP_NET_RAW`` for raw ones, and
``net.ipv4.ping_group_range`` closed to their group for ping sockets. The session checks once which
kinds this process may open; a test that then fails *because* a socket was refused (the library's
`RawSocketPermissionError`, its message in a command's output, or ``PermissionError`` opening a raw
socket in the test itself) is reported as skipped, with the reason and what to change. Where raw sockets
open (root, as in CI) nothing is ever converted, and under ``ICMPX_REQUIRE_LAB=1`` such a skip fails.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# pytest's default "prepend" import mode already puts this directory on sys.path (tests/ is not
# a package); do it explicitly too so `import lab` also works under --import-mode=importlib.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from lab import Lab, lab_available, lab_chain  # noqa: E402
from netns import inside, quiet_namespace  # noqa: E402

if TYPE_CHECKING:
    from loopwatch import LoopWatch

LAB_FIXTURES = frozenset({"lab_required", "lab8", "make_lab"})


def require_lab() -> bool:
    """True when ICMPX_REQUIRE_LAB=1: lab tests must run, and nothing may be skipped."""
    return os.environ.get("ICMPX_REQUIRE_LAB", "") == "1"


def _lab_unavailable(reason: str) -> None:
    if require_lab():
        pytest.fail(f"namespace lab required (ICMPX_REQUIRE_LAB=1) but unavailable: {reason}")
    pytest.skip(f"namespace lab unavailable: {reason}")


def _ensure_lab() -> None:
    reason = lab_available()
    if reason is not None:
        _lab_unavailable(reason)


# ---------------------------------------------------------------------------------- ICMP sockets


def _may_open(kind: int) -> bool:
    try:
        socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    except OSError as exc:
        return exc.errno not in (errno.EPERM, errno.EACCES)
    return True


RAW_SOCKETS = _may_open(socket.SOCK_RAW)
PING_SOCKETS = _may_open(socket.SOCK_DGRAM)
_ICMP_PROTOCOLS = (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)


class _SocketAttempts:
    """Which ICMP socket kinds the current test asked for (from the interpreter's audit events)."""

    refused = False

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.__new__" or len(args) < 4 or args[3] not in _ICMP_PROTOCOLS:
            return
        kind = args[2] & 0xF  # without SOCK_NONBLOCK / SOCK_CLOEXEC
        if (kind == socket.SOCK_RAW and not RAW_SOCKETS) or (kind == socket.SOCK_DGRAM and not PING_SOCKETS):
            cls.refused = True


if not RAW_SOCKETS:
    sys.addaudithook(_SocketAttempts.hook)  # audit hooks cannot be removed: only where they can matter

# The first words of RawSocketPermissionError's message, as the command line prints it too.
_REFUSED_MESSAGE = "icmpx needs either a raw ICMP socket or an unprivileged ICMP (ping) socket"


def socket_skip_reason() -> str:
    """Why a test refused an ICMP socket is skipped here: what this process may open, and how to fix it."""
    uid = os.getuid()
    if PING_SOCKETS:
        return (
            f"needs a raw ICMP socket, which uid {uid} may not open (no CAP_NET_RAW): run the tests as "
            "root, as CI does"
        )
    return (
        f"needs ICMP sockets: uid {uid} may open neither raw ones (no CAP_NET_RAW) nor ping ones "
        "(net.ipv4.ping_group_range excludes its group): run as root, as CI does, or open the range with "
        "`sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'`"
    )


def _socket_refused(excinfo: pytest.ExceptionInfo[BaseException] | None, text: str) -> bool:
    """True when the failure comes from an ICMP socket this process may not open: the test asked for one
    of a kind refused here, or a command it ran said so (in the failure's text, or a subprocess error's
    captured output)."""
    if _SocketAttempts.refused or _REFUSED_MESSAGE in text:
        return True
    if excinfo is None:
        return False
    from icmpx import RawSocketPermissionError

    pending: list[BaseException] = [excinfo.value]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, RawSocketPermissionError):
            return True
        if isinstance(exc, PermissionError) and _raised_opening_a_socket(exc):
            return True
        captured = f"{getattr(exc, 'stdout', '')}{getattr(exc, 'stderr', '')}"  # CalledProcessError
        if _REFUSED_MESSAGE in captured:
            return True
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        pending.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
    return False


def _raised_opening_a_socket(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename.endswith("socket.py") and frames[-1].name == "__init__"


# ---------------------------------------------------------------------------------- hooks


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every ``lab``-marked test needs the lab, whether it uses the fixtures or lab_chain(); a
    test using the lab fixtures must carry the marker (so ``-m "not lab"`` deselects it)."""
    _SocketAttempts.refused = False
    if item.get_closest_marker("lab") is not None:
        _ensure_lab()
    elif used := sorted(LAB_FIXTURES & set(getattr(item, "fixturenames", ()))):
        pytest.fail(f"{item.nodeid} uses {', '.join(used)} but lacks @pytest.mark.lab")


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failure caused by a refused ICMP socket, where this process may not open raw sockets, is a skip
    with the reason; under ICMPX_REQUIRE_LAB=1 a skipped test is a failed test (xfail stays xfail)."""
    report = yield
    if (
        report.failed
        and not RAW_SOCKETS
        and report.when in ("setup", "call")
        and _socket_refused(call.excinfo, str(report.longrepr))
    ):
        path, line, _name = item.location
        report.outcome = "skipped"
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {socket_skip_reason()}")
    if require_lab() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped while ICMPX_REQUIRE_LAB=1 forbids skips: {_skip_reason(report.longrepr)}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Same for a whole module skipped at collection (pytest.importorskip, module-level skip)."""
    report = yield
    if require_lab() and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"module skipped while ICMPX_REQUIRE_LAB=1 forbids skips: {_skip_reason(report.longrepr)}"
        )
    return report


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Async tests (``pytest.mark.anyio``) run on asyncio (debug mode) and trio unless a module narrows
    this; tests marked ``matrix`` also on uvloop and with batch I/O off (see ``BACKENDS`` below)."""
    return backend_variant(request)


@pytest.fixture
def quiet(lab_required: None) -> Iterator[str]:
    """This thread inside a namespace where nothing answers echoes: every probe stays in flight.

    (setns moves only the calling thread; the namespace goes when the test ends.)"""
    with quiet_namespace() as name, inside(name):
        yield name


@pytest.fixture
def lab_required() -> None:
    """Skip (or fail under ICMPX_REQUIRE_LAB=1) when the namespace lab cannot run here."""
    _ensure_lab()


@pytest.fixture(scope="module")
def _lab8_module() -> Iterator[Lab]:
    _ensure_lab()
    with lab_chain(8) as lab:
        yield lab


@pytest.fixture
def lab8(_lab8_module: Lab) -> Lab:
    """An 8-router chain (every hop answers, ping sockets open to all), shared by the tests of
    one module: do not change its state; build your own with ``make_lab`` for that."""
    return _lab8_module


@pytest.fixture
def make_lab(lab_required: None) -> Iterator[Callable[..., Lab]]:
    """Factory: ``make_lab(n_routers=8, silent=..., loss=..., ...)`` builds a chain with
    ``lab_chain``'s arguments; every chain it built is torn down after the test."""
    with ExitStack() as stack:

        def make(*args: Any, **kwargs: Any) -> Lab:
            return stack.enter_context(lab_chain(*args, **kwargs))

        yield make


# ---------------------------------------------------------------------------------- event loops (issue 12)
#
# Every async test runs on asyncio in debug mode and on trio (the ``anyio_backend`` fixture above); a test
# marked ``matrix`` (a representative subset) also on asyncio + uvloop and with batch I/O off (``_mmsg``
# unavailable: the recvmsg / one-sendto-per-packet fallback). In every one of them a watchdog fails the test
# if an icmpx call keeps the event loop waiting (asleep, on blocking I/O) for more than 10 ms in one step;
# steps where icmpx computes that long are listed at the end (and fail with ICMPX_LOOP_STRICT=1). See
# loopwatch.py.

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {"debug": True}),
    "trio": ("trio", {}),
    "uvloop": ("asyncio", {"debug": True, "use_uvloop": True}),
    "recvmsg": ("asyncio", {"debug": True}),  # with batch I/O off
}
_LOOP_WATCH = pytest.StashKey["LoopWatch"]()


def backend_variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The anyio backend (and options) of a ``BACKENDS`` name; "recvmsg" also turns batch I/O off."""
    name = str(request.param)
    if name == "recvmsg":
        from icmpx import _mmsg

        request.getfixturevalue("monkeypatch").setattr(_mmsg, "AVAILABLE", False)
    return BACKENDS[name]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A ``matrix`` test runs on every entry of BACKENDS: as a parametrize mark (added before pytest reads
    them), so that it takes the place of the fixture's own two parameters."""
    definition = metafunc.definition
    if definition.get_closest_marker("matrix") and "anyio_backend" in metafunc.fixturenames:
        definition.add_marker(pytest.mark.parametrize("anyio_backend", list(BACKENDS), indirect=True))


@pytest.fixture
async def loop_watch() -> AsyncIterator[LoopWatch]:
    """A watchdog on the test's event loop (see loopwatch.py); started before the test's other fixtures."""
    from loopwatch import LoopWatch  # (imported here: a copy of this file elsewhere may go without it)

    watch = LoopWatch.here()
    try:
        yield watch
    finally:
        watch.stop()


@pytest.fixture(autouse=True)
def _watch_the_loop(request: pytest.FixtureRequest) -> None:
    if "anyio_backend" in request.fixturenames:
        request.node.stash[_LOOP_WATCH] = request.getfixturevalue("loop_watch")


_BUSY_STEPS: list[tuple[float, str, str]] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """An async test in which icmpx kept the event loop waiting for more than 10 ms fails (with
    ICMPX_LOOP_STRICT=1 also one in which icmpx computed for more than 10 ms in one step)."""
    yield
    watch = item.stash.get(_LOOP_WATCH, None)
    if watch is not None:
        watch.stop()
        _BUSY_STEPS.extend((stall.blocked, item.nodeid, str(stall)) for stall in watch.busy)
        failures = watch.violations + (watch.busy if os.environ.get("ICMPX_LOOP_STRICT") == "1" else [])
        if failures:
            pytest.fail("icmpx blocked the event loop: " + "; ".join(map(str, failures)), pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _BUSY_STEPS:
        title = "icmpx computed for more than 10 ms in one loop step (these fail with ICMPX_LOOP_STRICT=1)"
        terminalreporter.section(title)
        worst = sorted(_BUSY_STEPS, reverse=True)
        for _blocked, nodeid, stall in worst[:20]:
            terminalreporter.write_line(f"{nodeid}: {stall}")
        if len(worst) > 20:
            terminalreporter.write_line(f"... and {len(worst) - 20} shorter ones")
