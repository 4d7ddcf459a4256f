"""Nothing icmpx does blocks the event loop (issue 12, item 6), and the watchdog that checks it in every
async test (conftest.py, loopwatch.py) blames icmpx and only icmpx."""

from __future__ import annotations

import time
import types
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import icmpx
from icmpx import _socket as S
from loopwatch import ICMPX_DIR, LoopWatch

pytestmark = pytest.mark.anyio


async def test_the_watchdog_blames_an_icmpx_frame_holding_the_loop(loop_watch: LoopWatch) -> None:
    # A function whose code claims to live in the icmpx package, as a blocking icmpx call would.
    where = Path(ICMPX_DIR) / "_stand_in.py"
    namespace: dict[str, object] = {"time": time}
    exec(compile("def hold(seconds):\n    time.sleep(seconds)\n", str(where), "exec"), namespace)
    hold = namespace["hold"]
    assert callable(hold)
    hold(0.03)
    await anyio.lowlevel.checkpoint()  # the step ends: the loop judges it
    loop_watch.stop()
    assert loop_watch.worst >= 0.025
    (stall,) = loop_watch.violations
    assert stall.blocked >= 0.02
    assert list(stall.where) == ["_stand_in.py:hold"]
    loop_watch.violations.clear()  # provoked on purpose: not a failure of this test


async def test_the_watchdog_does_not_blame_the_tests_own_blocking(loop_watch: LoopWatch) -> None:
    time.sleep(0.03)  # noqa: ASYNC251  (the point: test code, not icmpx, holds the loop)
    await anyio.lowlevel.checkpoint()
    loop_watch.stop()
    assert loop_watch.worst >= 0.025
    assert loop_watch.violations == []


@pytest.mark.matrix
async def test_opening_a_client_does_not_block_while_the_kernel_turns_timestamps_on(
    monkeypatch: pytest.MonkeyPatch, loop_watch: LoopWatch
) -> None:
    # Linux switches receive timestamps on lazily (a workqueue flips a static key): until it has, packets
    # are stamped when read. icmpx waits for the switch, up to 50 ms, once per process. Make this process
    # new and the kernel slow: every stamp looks taken at the read (the clock icmpx compares it with reads 0).
    monkeypatch.setattr(S, "_timestamps_ready", False)
    monkeypatch.setattr(S, "time", types.SimpleNamespace(**{**vars(time), "time_ns": lambda: 0}))
    async with icmpx.AsyncClient(timeout=2) as client:
        result = await client.probe("127.0.0.1")
        assert result.ok
    loop_watch.stop()
    assert loop_watch.violations == [], "\n".join(str(v) for v in loop_watch.violations)
