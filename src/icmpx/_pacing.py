"""Pacing: a token bucket shared by every send of a client (or of one sweep)."""

from __future__ import annotations

import time

import anyio

__all__ = ["Pacer"]


class Pacer:
    """A token bucket shared by every send of the client: at most ``rate`` packets a second.

    Each send reserves the next slot, so concurrent senders are paced together; a short burst (a tenth of a
    second's worth) may go out at once after an idle spell.
    """

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._burst = max(1.0, rate * 0.1) * self._interval
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(self._next, now - self._burst)
        self._next = slot + self._interval
        if slot > now:
            await anyio.sleep(slot - now)
