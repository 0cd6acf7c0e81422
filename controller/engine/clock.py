"""Time for the engine: wall time live, virtual time in simulation.

In simulation each trial runs on its own `StationClock`, started at the moment the trial is dispatched;
a driver's `clock.sleep` only advances that station's timeline, so a two-hour growth costs nothing.
The `VirtualClock` of the campaign is then moved to each trial's completion time, in order.

Live, the `WallClock` may run faster (`--time-scale`, against an emulator started with the same scale),
and it is where an operator abort reaches a running trial: its next wait raises `OperatorAbort`.

The budget (`wall_time`) is charged by `elapsed_since`, not by `now()`: a scaled clock charges the waits an
instrument's process takes (a driver's `sleep`: an anneal, a soak) at the emulator's pace, and every other
second (a serial timeout, planning, start-up) as the real second it was. Otherwise a fault storm of 0.2 s
timeouts at x36000 "used 78 h of 72 h" without a single anneal.
"""

from __future__ import annotations

import math
import threading
import time

from closedloop.drivers.base import InstrumentFault


class OperatorAbort(InstrumentFault):
    """Raised from a live clock's `sleep` once the operator has aborted the trials in flight (Ctrl-C,
    SIGTERM). An `InstrumentFault`, so a driver's own watchdog (put the instrument safe, re-raise) runs."""


class WallClock:
    """Real time. `now()` is seconds since the epoch.

    With `scale` (an emulator's `--time-scale`, e.g. 3600) time runs that many times faster, counted from
    `origin` (the campaign's creation): `now() = origin + scale * (time.time() - origin)`, and `sleep(s)`
    waits s / scale wall seconds. Only an emulator keeps pace with such a clock; a real instrument does not.

    `abort()` (from any thread) ends every wait at once: `sleep` raises `OperatorAbort` from then on, so a
    running trial stops at its next wait instead of minutes or hours later.
    """

    virtual = False

    def __init__(self, scale: float = 1.0, *, origin: float | None = None) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"time scale must be a positive number (emulated seconds per wall second), got {scale!r}")
        self.scale = float(scale)
        self.origin = time.time() if origin is None else float(origin)
        self._aborted = threading.Event()
        # Real seconds during which at least one trial was in `sleep` (stations sleep side by side: their
        # waits overlap, and the instrument time they stand for passes once, not once per station).
        self._waits = threading.Lock()
        self._sleepers = 0
        self._slept = 0.0
        self._since = time.monotonic()

    def now(self) -> float:
        """The instrument's time, in step with an emulator at the same scale: what drivers time waits by."""
        real = time.time()
        return real if self.scale == 1.0 else self.origin + (real - self.origin) * self.scale

    def sleep(self, seconds: float) -> None:
        self._count_sleeper(+1)
        try:
            aborted = self._aborted.wait(max(0.0, seconds) / self.scale)
        finally:
            self._count_sleeper(-1)
        if aborted:
            raise OperatorAbort("the operator stopped the trial (Ctrl-C or SIGTERM) while the instrument was waiting")

    def elapsed_since(self, origin: float) -> float:
        """Campaign seconds since `origin` (an epoch time) for the wall-time budget: real seconds, of which
        those spent in an instrument's waits (`sleep`) count `scale` times. At scale 1 it is plain wall time."""
        real = time.time() - origin
        return real if self.scale == 1.0 else real + (self.scale - 1.0) * self._slept_real()

    def _count_sleeper(self, change: int) -> None:
        with self._waits:
            mark = time.monotonic()
            if self._sleepers:
                self._slept += mark - self._since
            self._since = mark
            self._sleepers += change

    def _slept_real(self) -> float:
        with self._waits:
            return self._slept + (time.monotonic() - self._since if self._sleepers else 0.0)

    def abort(self) -> None:
        self._aborted.set()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()


class VirtualClock:
    """Simulated campaign time in seconds; only the engine moves it (to trial completions)."""

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        # Completions are processed in time order, so time never runs backwards.
        self._now = max(self._now, float(t))

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, float(seconds))

    def elapsed_since(self, origin: float) -> float:
        """Simulated seconds since `origin`: all of virtual time is the instruments' time."""
        return self._now - origin


class StationClock:
    """A station's own timeline for one trial in virtual time: starts at dispatch, advances on sleep."""

    virtual = True

    def __init__(self, start: float) -> None:
        self.start = float(start)
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, float(seconds))

    @property
    def elapsed(self) -> float:
        return self._now - self.start
