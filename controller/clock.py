"""Time for the engine: wall time live, virtual time in simulation.

In simulation each trial runs on its own `StationClock`, started at the moment the trial is dispatched;
a driver's `clock.sleep` only advances that station's timeline, so a two-hour growth costs nothing.
The `VirtualClock` of the campaign is then moved to each trial's completion time, in order.
"""

from __future__ import annotations

import time


class WallClock:
    """Real time. `now()` is seconds since the epoch."""

    virtual = False

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


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
