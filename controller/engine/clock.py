"""Time for the engine: wall time live, virtual time in simulation.

In simulation each trial runs on its own `StationClock`, started at the moment the trial is dispatched;
a driver's `clock.sleep` only advances that station's timeline, so a two-hour growth costs nothing.
The `VirtualClock` of the campaign is then moved to each trial's completion time, in order.

Live, the `WallClock` may run faster (`--time-scale`, against an emulator started with the same scale),
and it is where an operator abort reaches a running trial: its next wait raises `OperatorAbort`.
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

    def now(self) -> float:
        real = time.time()
        return real if self.scale == 1.0 else self.origin + (real - self.origin) * self.scale

    def sleep(self, seconds: float) -> None:
        if self._aborted.wait(max(0.0, seconds) / self.scale):
            raise OperatorAbort("the operator stopped the trial (Ctrl-C or SIGTERM) while the instrument was waiting")

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
