"""Loss and round-trip statistics, as ping, fping and mtr compute them. Pure: no I/O, no clock.

* ``stdev`` is the *sample* standard deviation (n - 1 in the denominator, as mtr's StDev), 0.0 for one sample;
* ``jitter`` is the mean absolute difference of consecutive RTTs (mtr's Javg), 0.0 for one sample.

`RttAccumulator` keeps these in O(1) memory (Welford's update), so a sweep of 100,000 targets or an mtr
running for days stores no list of samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["RttAccumulator", "loss_pct"]


def loss_pct(sent: int, received: int) -> float:
    """Percentage of probes lost, 0-100; 0.0 when nothing was sent."""
    if sent <= 0:
        return 0.0
    lost = max(sent - received, 0)
    return 100.0 * lost / sent


class RttAccumulator:
    """Running count, min, max, mean, sample stdev, last and jitter of a stream of RTTs (ms)."""

    __slots__ = ("_jitter_sum", "_m2", "_mean", "count", "last", "max", "min")

    def __init__(self, rtts: Iterable[float] = ()) -> None:
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.last: float | None = None
        self._mean = 0.0
        self._m2 = 0.0
        self._jitter_sum = 0.0
        for rtt in rtts:
            self.add(rtt)

    def add(self, rtt: float) -> None:
        """Take one RTT in milliseconds, in the order the probes were sent."""
        if self.last is not None:
            self._jitter_sum += abs(rtt - self.last)
        self.last = rtt
        self.count += 1
        if rtt < self.min:
            self.min = rtt
        if rtt > self.max:
            self.max = rtt
        delta = rtt - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (rtt - self._mean)

    @property
    def best(self) -> float | None:
        return self.min if self.count else None

    @property
    def worst(self) -> float | None:
        return self.max if self.count else None

    @property
    def mean(self) -> float | None:
        return self._mean if self.count else None

    @property
    def stdev(self) -> float | None:
        """Sample standard deviation; 0.0 for a single sample, None for none."""
        if not self.count:
            return None
        if self.count == 1:
            return 0.0
        return math.sqrt(max(self._m2, 0.0) / (self.count - 1))

    @property
    def jitter(self) -> float | None:
        """Mean absolute difference of consecutive RTTs; 0.0 for a single sample, None for none."""
        if not self.count:
            return None
        if self.count == 1:
            return 0.0
        return self._jitter_sum / (self.count - 1)
