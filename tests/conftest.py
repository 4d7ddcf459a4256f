"""Shared test configuration: the network-namespace lab fixtures and the ICMPX_REQUIRE_LAB rule.

Lab tests are marked ``@pytest.mark.lab``.  Where the lab cannot run (not root, no ``ip``/``nft``,
namespaces forbidden) they skip with the reason; with ``ICMPX_REQUIRE_LAB=1`` (as CI sets) they
fail instead, and so does *any* skip anywhere in the run: a green CI means everything ran.
"""

from __future__ import annotations

import os
import sys
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


# ---------------------------------------------------------------------------------- hooks


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every ``lab``-marked test needs the lab, whether it uses the fixtures or lab_chain(); a
    test using the lab fixtures must carry the marker (so ``-m "not lab"`` deselects it)."""
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
    """Under ICMPX_REQUIRE_LAB=1 a skipped test is a failed test (xfail stays xfail)."""
    report = yield
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
