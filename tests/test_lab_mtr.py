"""mtr() and `icmpx mtr` against kernel routers: silent hop, loss statistics, the live table on a terminal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import anyio
import pytest

import icmpx
from lab import Lab
from netns import inside

pytestmark = pytest.mark.lab

CLI = "import sys; from icmpx.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_mtr_json_with_a_silent_hop(make_lab: Callable[..., Lab], user: str) -> None:
    lab = make_lab(8, silent=(3,))
    proc = lab.python(
        CLI, user=user, check=False, args=["mtr", lab.target4, "-c", "5", "-i", "0.2", "-W", "1", "--json"]
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["target"] == lab.target4
    assert doc["cycles"] == 5
    hops = doc["hops"]
    assert [h["ttl"] for h in hops] == list(range(1, 10))
    for hop in hops:
        assert hop["sent"] == 5, hop
        if hop["ttl"] == 3:
            assert hop["addr"] is None
            assert hop["loss_pct"] == 100.0
            assert hop["avg_ms"] is None
        else:
            assert hop["addr"] == lab.hop4(hop["ttl"])
            assert hop["hostname"] == lab.hostname(hop["ttl"])  # reverse DNS from the lab's hosts file
            assert hop["loss_pct"] == 0.0
            assert hop["received"] == 5
            assert 0 < hop["best_ms"] <= hop["avg_ms"] <= hop["worst_ms"]
            assert hop["stdev_ms"] >= 0
            assert hop["javg_ms"] >= 0


def test_mtr_report_names_every_router(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(8, silent=(3,))
    proc = lab.python(CLI, check=False, args=["mtr", lab.target6, "-c", "3", "-i", "0.2", "-W", "1"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for k in (1, 2, 4, 5, 6, 7, 8, 9):
        row = next(line for line in lines if line.split()[:1] == [str(k)])
        assert lab.hop6(k) in row.split()
        assert lab.hostname(k) in row.split()  # full names: a pipe never truncates
    assert "???" in next(line for line in lines if line.split()[:1] == ["3"])


def test_loss_statistics_over_100_cycles(make_lab: Callable[..., Lab]) -> None:
    """20% random loss in router 4, both directions: hops 1-4 lose nothing, hops 5-9 lose 1-0.8² = 36%."""
    lab = make_lab(8, loss={4: 20})

    async def run() -> icmpx.MtrReport:
        async with icmpx.AsyncClient(timeout=1) as client:
            reports = [r async for r in client.mtr(lab.target4, cycles=100, interval=0.02)]
            last = reports[-1]
            assert client.stats.pending == 0
            return last

    with inside(lab.client):
        report = anyio.run(run)
    assert report.cycle == 100
    assert report.hops[-1].addr == lab.target4
    for hop in report.hops[:4]:
        assert hop.loss_pct == 0.0, hop
    beyond = report.hops[4:]
    for hop in beyond:
        assert hop.sent >= 99
        # Binomial(≈100, 0.36): standard deviation about 4.8 points; allow more than 3 of them.
        assert 20.0 <= hop.loss_pct <= 52.0, hop
    pooled = sum(h.sent - h.received for h in beyond) / sum(h.sent for h in beyond)
    assert 0.29 <= pooled <= 0.43


def test_cycles_overlap_when_timeout_exceeds_interval(make_lab: Callable[..., Lab]) -> None:
    """Silent hop, timeout 1 s, interval 0.1 s: 10 cycles take about 0.9 s + one timeout, not 10 timeouts."""
    lab = make_lab(4, silent=(2,))

    async def run() -> tuple[list[int], float]:
        async with icmpx.AsyncClient(timeout=1) as client:
            started = time.monotonic()
            cycles = [r.cycle async for r in client.mtr(lab.target4, cycles=10, interval=0.1)]
            return cycles, time.monotonic() - started

    with inside(lab.client):
        cycles, elapsed = anyio.run(run)
    assert cycles == list(range(1, 11))
    assert 1.8 <= elapsed < 2.6


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_table_changes_between_cycles(make_lab: Callable[..., Lab]) -> None:
    """The live view on a real terminal (tmux), read twice: the cycle count in its title moves on."""
    lab = make_lab(2)
    session = f"icmpx-mtr-{lab.client}"
    command = (
        # COLUMNS/LINES inherited from pytest would override the terminal's real size.
        f"env -u COLUMNS -u LINES ip netns exec {lab.client} {sys.executable} -m icmpx mtr {lab.target4} "
        "-i 0.2 -n; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "30", command], check=True)
    try:
        first = _wait_for_cycle(session, at_least=2)
        second = _wait_for_cycle(session, at_least=first + 2)
        screen = _capture(session)
        assert lab.hop4(1) in screen
        assert lab.target4 in screen
        assert second > first
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], check=True, capture_output=True, text=True
    ).stdout


def _wait_for_cycle(session: str, *, at_least: int, bound: float = 10.0) -> int:
    deadline = time.monotonic() + bound
    while True:
        screen = _capture(session)
        for line in screen.splitlines():
            if "cycle " in line:
                cycle = int(line.rsplit("cycle ", 1)[1].split()[0])
                if cycle >= at_least:
                    return cycle
        if time.monotonic() > deadline:
            raise AssertionError(f"no cycle >= {at_least} on screen:\n{screen}")
        time.sleep(0.05)  # polling the screen of another process, bounded by the deadline
