"""The pacer: never more than ``rate`` packets in any one-second window, the first included.

The decision (`Pacer.due` / `Pacer.record`) is driven here with a fake clock and a fake event loop that
wakes late; `Pacer.wait` once on the real clock. The same promise on the wire: tests/test_lab_pacing.py.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time

import anyio
import pytest

from icmpx._pacing import MAX_WINDOW, Pacer


def most_in_a_window(times: list[float], window: float = 1.0) -> int:
    """The largest number of ``times`` in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def drive(
    pacer: Pacer, packets: int, *, start: float = 1000.0, late: float = 0.0, seed: int = 1
) -> list[float]:
    """Release ``packets`` from one sender that wakes up to ``late`` seconds after each slot it sleeps
    for (as a loaded event loop does); returns the release times."""
    rng = random.Random(seed)
    now = start
    times = []
    for _ in range(packets):
        slot = pacer.due(now)
        if slot > now:
            now = slot + rng.uniform(0, late)
        pacer.record(now)
        times.append(now)
        now += 2e-6  # the send itself
    return times


@pytest.mark.parametrize("rate", [1.0, 7.5, 100.0, 500.0, 10_000.0])
@pytest.mark.parametrize("late", [0.0, 0.0003, 0.002])
def test_never_more_than_rate_in_any_second(rate: float, late: float) -> None:
    times = drive(Pacer(rate), int(rate * 4) + 3, late=late)
    assert most_in_a_window(times) <= int(rate)


@pytest.mark.parametrize("rate", [10.0, 500.0, 10_000.0])
def test_no_start_up_burst(rate: float) -> None:
    """The bucket starts empty: the first tenth of a second carries a tenth of the rate (plus the first)."""
    times = drive(Pacer(rate), int(rate))
    start = times[0]
    assert sum(t < start + 0.1 for t in times) <= rate * 0.1 + 1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / rate - 1e-9


@pytest.mark.parametrize("rate", [500.0, 10_000.0])
def test_the_rate_is_kept_up_despite_late_wake_ups(rate: float) -> None:
    """Catching up on a few missed slots keeps the long-run rate close to the cap (above 95% of it)
    when every wake-up is up to half a millisecond late."""
    times = drive(Pacer(rate), int(rate * 5), late=0.0005)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert 0.95 * rate <= achieved <= rate


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 4), (500.0, 10), (1000.0, 20)])
def test_after_an_idle_spell_the_burst_is_small(rate: float, burst: int) -> None:
    """Twenty milliseconds' worth at most (at least 4 packets) go back to back after five idle seconds."""
    pacer = Pacer(rate)
    assert pacer.catch_up == burst
    first = drive(pacer, 50)
    later = drive(pacer, 50, start=first[-1] + 5.0)
    back_to_back = sum(b - a < 0.5 / rate for a, b in itertools.pairwise(later))
    assert back_to_back == burst
    assert most_in_a_window(first + later) <= rate


def test_a_slow_event_loop_still_gets_close_to_the_rate() -> None:
    """Woken 10 ms late every time at 1,000/s: catching up keeps the rate above 90% of the cap."""
    times = drive(Pacer(1000.0), 3000, late=0.01)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert 0.9 * 1000 <= achieved <= 1000


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_a_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate)


@pytest.mark.anyio
async def test_wait_on_the_real_clock_from_concurrent_senders() -> None:
    """Four tasks sharing one pacer at 500/s: 1,100 releases, never 501 in a second, 51 in the first 0.1 s."""
    pacer = Pacer(500)
    times: list[float] = []

    async def sender(n: int) -> None:
        for _ in range(n):
            await pacer.wait()
            times.append(time.monotonic())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(sender, 275)
    assert most_in_a_window(times) <= 500
    assert sum(t < times[0] + 0.1 for t in times) <= 51
    assert times[-1] - times[0] < 2.5  # and it does not crawl: ~2.2 s for 1,100 at 500/s


def test_a_high_rate_keeps_its_promise_in_bounded_memory() -> None:
    """200,000/s: the window is a quarter of a second (50,000 release times kept, not 200,000), and no
    second holds more than the rate."""
    rate = 200_000.0
    pacer = Pacer(rate)
    times = drive(pacer, 300_000, late=0.0005)
    assert len(pacer._recent) <= MAX_WINDOW
    assert most_in_a_window(times) <= rate
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.95 * rate
