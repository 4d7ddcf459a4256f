"""Catch icmpx blocking the event loop (issue 12): a watchdog on the loop of every async test.

The event loop tells when one step (a callback, a task running up to its next await) took longer than
``LIMIT`` (10 ms): asyncio and uvloop in debug mode with ``slow_callback_duration`` (their "Executing ...
took ... seconds" warning), trio through an instrument around every task step. Meanwhile a thread samples
the loop thread's stack every millisecond; the part of a slow step during which an icmpx frame was on it
is the time icmpx held the loop. Time the thread spent runnable but not running (other processes had the
CPU: ``/proc/self/task/<tid>/schedstat``) is left out, so a busy machine does not fail a test.

A step in which icmpx kept the loop *waiting* (asleep in the kernel on its own account: a sleep, blocking
I/O, a poll; the thread's ``wchan`` tells, and every ``time.sleep`` icmpx calls on the loop's thread is
timed exactly) for more than ``LIMIT`` is a violation: the test fails, naming
the icmpx functions on the stack. A test's own code blocking the loop is not blamed (no icmpx frame on the
stack), nor many short steps in a row (each gives the loop back).

Steps in which icmpx *computed* (or waited on a futex: the GIL or a lock) for more than ``LIMIT`` are
collected in `busy` and listed at the end of the run; they fail only with ``ICMPX_LOOP_STRICT=1``. While
the loop thread computes it holds the GIL, so the sampling thread sees its stack only every few
milliseconds and the blame is approximate; a GIL wait cannot be told from one the sampler itself caused
on a loaded machine; and asyncio's debug mode, which the suite runs in, multiplies the cost of every step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import icmpx

LIMIT = 0.010  # seconds an icmpx call may hold the loop
PERIOD = 0.001  # between samples of the loop thread
STARVED = 0.004  # a longer gap between samples means the sampler could not get the GIL
ICMPX_DIR = str(Path(icmpx.__file__).resolve().parent) + os.sep


@dataclass
class Stall:
    """One step of the loop that took longer than the limit."""

    duration: float
    """Seconds the step ran."""
    blocked: float = 0.0
    """Seconds of it with icmpx on the loop thread's stack, not counting waiting for a CPU."""
    waiting: float = 0.0
    """Of ``blocked``, seconds the loop thread was asleep in the kernel on its own account (a sleep, I/O),
    the rest it ran or waited on a futex (the GIL, a lock)."""
    where: Counter[str] = field(default_factory=Counter)
    """Innermost icmpx function on the stack (``module.py:function``), by samples."""

    @property
    def computing(self) -> float:
        return self.blocked - self.waiting

    def __str__(self) -> str:
        spots = ", ".join(f"{name} ({n})" for name, n in self.where.most_common(4))
        return (
            f"icmpx held the loop {self.blocked * 1e3:.1f} ms ({self.waiting * 1e3:.1f} ms waiting, "
            f"{self.computing * 1e3:.1f} ms computing; step {self.duration * 1e3:.1f} ms) in {spots}"
        )


class LoopWatch:
    """Start it on the loop's thread with `LoopWatch.here`, stop it with `stop`, read `violations`."""

    def __init__(self, limit: float = LIMIT) -> None:
        self.limit = limit
        self.violations: list[Stall] = []
        """Steps in which icmpx kept the loop waiting (asleep, on I/O, on a lock) for more than the limit."""
        self.busy: list[Stall] = []
        """Steps in which icmpx computed for more than the limit (see the module docstring)."""
        self.worst = 0.0
        """The longest step seen (whatever ran in it), in seconds."""
        self._ident = threading.get_ident()
        self._schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self._wchan = f"/proc/self/task/{threading.get_native_id()}/wchan"
        self._samples: deque[tuple[float, int, bool, str | None]] = deque(maxlen=20_000)
        self._sleeps: deque[tuple[float, float, str]] = deque(maxlen=20_000)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="icmpx-loop-watch", daemon=True)
        self._undo: list[Any] = []

    @classmethod
    def here(cls, limit: float = LIMIT) -> LoopWatch:
        """Watch the event loop running the calling coroutine (asyncio, uvloop or trio)."""
        import sniffio

        watch = cls(limit)
        watch._thread.start()
        watch._trip_sleep()
        if sniffio.current_async_library() == "trio":
            watch._hook_trio()
        else:
            watch._hook_asyncio()
        return watch

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        while self._undo:
            self._undo.pop()()
        self._stopped.set()
        self._thread.join(5)

    # ------------------------------------------------------------------------------ steps, on the loop

    def step(self, start: float, end: float) -> None:
        """A step of the loop ran from ``start`` to ``end`` (``time.monotonic``): judge it if long."""
        duration = end - start
        self.worst = max(self.worst, duration)
        if duration <= self.limit:
            return
        stall = Stall(duration)
        last: tuple[float, int] | None = None
        for t, waiting, asleep, where in list(self._samples):
            if t <= start:
                last = (t, waiting)
                continue
            if t > end + PERIOD:
                break
            prev_t, prev_waiting = last if last is not None else (start, waiting)
            if where is not None:
                span = min(t, end) - max(prev_t, start)
                share = span / (t - prev_t) if t > prev_t else 0.0  # of the interval, inside the step
                blocked = max(0.0, span - share * (waiting - prev_waiting) / 1e9)
                stall.blocked += blocked
                # Asleep in the kernel on its own account when sampled (a sleep, I/O, a poll), the sampler
                # running freely meanwhile (a thread that sleeps frees the GIL): waiting. Otherwise it ran
                # (its CPU time, softirq work on its behalf) or waited on a futex (the GIL or a lock, which
                # the sampler's own turns cause too): busy.
                if asleep and t - prev_t <= STARVED:
                    stall.waiting += blocked
                stall.where[where] += 1
            last = (t, waiting)
        # time.sleep called by icmpx on the loop's thread, timed exactly (a sampler may miss short sleeps)
        slept = 0.0
        for began, ended, where in list(self._sleeps):
            if began >= start and ended <= end + PERIOD:
                slept += ended - began
                stall.where[where] += 1
        stall.waiting = max(stall.waiting, slept)
        stall.blocked = max(stall.blocked, stall.waiting)
        if stall.waiting > self.limit:
            self.violations.append(stall)
        elif stall.blocked > self.limit:
            self.busy.append(stall)

    def _trip_sleep(self) -> None:
        """Time every ``time.sleep`` that icmpx calls on the loop's thread."""
        real = time.sleep
        watch = self

        def sleep(seconds: float) -> None:
            if threading.get_ident() != watch._ident:
                return real(seconds)
            frame = sys._getframe(1)
            where = watch._icmpx_in(frame)
            began = time.monotonic()
            try:
                return real(seconds)
            finally:
                if where is not None:
                    watch._sleeps.append((began, time.monotonic(), where))

        time.sleep = sleep

        def undo() -> None:
            time.sleep = real

        self._undo.append(undo)

    def _hook_asyncio(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        debug, slow = loop.get_debug(), loop.slow_callback_duration
        loop.set_debug(True)
        loop.slow_callback_duration = self.limit
        watch = self

        class SlowSteps(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                # "Executing <Handle ...> took 0.050 seconds", logged right after the step
                if str(record.msg).startswith("Executing") and isinstance(record.args, tuple) and record.args:
                    end = time.monotonic()
                    watch.step(end - float(record.args[-1]), end)

        handler = SlowSteps(logging.WARNING)
        logger = logging.getLogger("asyncio")
        logger.addHandler(handler)

        def undo() -> None:
            logger.removeHandler(handler)
            if not loop.is_closed():
                loop.set_debug(debug)
                loop.slow_callback_duration = slow

        self._undo.append(undo)

    def _hook_trio(self) -> None:
        import trio

        watch = self

        class Steps(trio.abc.Instrument):
            started = 0.0

            def before_task_step(self, task: trio.lowlevel.Task) -> None:
                self.started = time.monotonic()

            def after_task_step(self, task: trio.lowlevel.Task) -> None:
                watch.step(self.started, time.monotonic())

        instrument = Steps()
        trio.lowlevel.add_instrument(instrument)

        def undo() -> None:
            with contextlib.suppress(KeyError, RuntimeError):  # already gone, or the run is over
                trio.lowlevel.remove_instrument(instrument)

        self._undo.append(undo)

    # ------------------------------------------------------------------------------ the sampling thread

    def _waiting_ns(self) -> int:
        """Nanoseconds the loop thread has spent runnable but not running (waiting for a CPU)."""
        try:
            with open(self._schedstat) as f:
                return int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    def _asleep(self) -> bool:
        """Is the loop thread asleep in the kernel on its own account: not running, not runnable, not on a
        futex (the GIL, a lock)? Its ``wchan`` names where it sleeps, "0" when it runs or may run."""
        try:
            with open(self._wchan) as f:
                where = f.read().strip()
        except OSError:
            return False
        return where not in ("", "0") and "futex" not in where

    def _icmpx_frame(self) -> str | None:
        return self._icmpx_in(sys._current_frames().get(self._ident))

    @staticmethod
    def _icmpx_in(frame: Any) -> str | None:
        """The innermost icmpx function of a stack (``module.py:function``), or None."""
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(ICMPX_DIR):
                return f"{filename[len(ICMPX_DIR) :]}:{frame.f_code.co_name}"
            frame = frame.f_back
        return None

    def _sample(self) -> None:
        while not self._stopped.wait(PERIOD):
            waiting = self._waiting_ns()
            where = self._icmpx_frame()
            asleep = where is not None and self._asleep()
            self._samples.append((time.monotonic(), waiting, asleep, where))
