"""Pacing: at most ``rate`` packets in any one-second window, from the first packet on.

A `Pacer` is shared by every send it paces (all of a client's, or one sweep's). Two rules decide when the
next packet may leave:

* a schedule, one slot every ``1 / rate`` seconds. It starts at the first packet (the bucket starts
  empty: no start-up burst), and senders the event loop woke late may catch up on the slots they missed,
  but only on those of the last `CATCH_UP` seconds (and at least 4): a slow loop still gets close to
  ``rate``, and after an idle spell at most ``max(4, CATCH_UP * rate)`` packets go back to back;
* a sliding window: packet *k* leaves at least one second (plus `WINDOW_MARGIN`, for the time between the
  pacer's release and the packet's departure) after packet *k - n*, where ``n = max(1, floor(rate))``.
  That is the promise itself, kept whatever the schedule's catching up and the event loop's lateness do.
  Above `MAX_WINDOW` packets a second the window is a fraction ``1/s`` of a second holding
  ``floor(rate / s)`` packets: any second is ``s`` such windows, so the promise holds with the memory of
  at most `MAX_WINDOW` release times.

Senders are released one at a time, in the order they asked, and each release time is the clock's reading
at the release, not the time planned for it, so a late wake-up never makes the next packets denser.
`due` and `record` are the whole decision, with the clock passed in: a test drives them without a loop.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable

import anyio

__all__ = ["CATCH_UP", "MAX_WINDOW", "WINDOW_MARGIN", "Pacer"]

CATCH_UP = 0.02
"""Seconds of missed slots a late sender may catch up on (at least 4 slots): the largest burst after an idle
spell is that many seconds' worth of packets, beyond the first."""

WINDOW_MARGIN = 0.002
"""Seconds added to each second of the window, for what happens between a release and the departure."""

MAX_WINDOW = 65536
"""The most release times a pacer keeps (512 KiB)."""


class Pacer:
    """At most ``rate`` packets in any one-second window (see the module docstring).

    `catch_up` is the most packets that may go back to back (after an idle spell, or a slow event loop).

    Memory: one float per packet of the window (at most `MAX_WINDOW`), filled as packets go.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of packets per second, not {rate!r}")
        self._interval = 1.0 / rate
        self._catch_up = max(CATCH_UP, 4 * self._interval)
        parts = max(1, math.ceil(rate / MAX_WINDOW))  # windows of 1/parts seconds
        self._window = max(1, math.floor(rate / parts))
        self._span = (1.0 + WINDOW_MARGIN) / parts
        self._recent = array("d")  # release times of the last `_window` packets, a ring from `_oldest`
        self._oldest = 0
        self._next: float | None = None
        self._clock = clock
        self._lock: anyio.Lock | None = None

    @property
    def catch_up(self) -> int:
        return round(self._catch_up / self._interval)

    def due(self, now: float) -> float:
        """The earliest time the next packet may leave, asked at ``now`` (its slot is then taken)."""
        slot = now if self._next is None else max(self._next, now - self._catch_up)
        if len(self._recent) == self._window:
            slot = max(slot, self._recent[self._oldest] + self._span)
        self._next = slot + self._interval
        return slot

    def record(self, at: float) -> None:
        """A packet was released at ``at``."""
        recent = self._recent
        if len(recent) < self._window:
            recent.append(at)
        else:
            recent[self._oldest] = at
            self._oldest = (self._oldest + 1) % self._window

    async def wait(self) -> None:
        """Return when the next packet may be sent (send it at once, without awaiting anything first)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        clock = self._clock
        if not self._lock.locked():
            # Nobody is waiting: when the slot has come, no await at all (the common case of a sender
            # that is itself slower than the rate); otherwise sleep holding the lock, so later callers
            # queue behind this one.
            now = clock()
            slot = self.due(now)
            if slot <= now:
                self.record(now)
                return
            self._lock.acquire_nowait()
            try:
                await self._sleep_until(slot)
            finally:
                self._lock.release()
            return
        async with self._lock:
            await self._sleep_until(self.due(clock()))

    async def _sleep_until(self, slot: float) -> None:
        clock = self._clock
        while (now := clock()) < slot:  # noqa: ASYNC110 -- sleeps until a time, re-read after waking
            await anyio.sleep(slot - now)
        self.record(now)
