"""How busy each station and each step of a campaign was, the step that held the line back, and how
many samples a day the line finished and would finish at steady state; from its spans
(`controller.report.schedule.spans`).

    >>> from closedloop.controller.report.schedule.spans import StepSpan
    >>> spans = [StepSpan(1, "coat", 0, "robot", 0.0, 100.0, "done"), StepSpan(2, "coat", 0, "robot", 100.0, 300.0, "done"),
    ...          StepSpan(1, "anneal", 1, "plate", 100.0, 250.0, "done")]
    >>> s = summarize(spans)
    >>> s.bottleneck.step, f"{s.bottleneck.utilization:.0%}", round(s.predicted_per_day)
    ('coat', '100%', 576)

The horizon is the campaign's working time: from the first span's start to the last span's end. A
station's utilization is its busy time (the union of its spans, whatever their outcome: a faulted or
interrupted step held the station too) over the horizon; a step's is the mean over its stations. The
bottleneck is the step with the highest utilization. At steady state a step of S stations whose sample
takes d on average passes S / d samples; the line passes no more than its slowest step does, so the
predicted rate is the smallest of these (the bottleneck's, whenever the line was kept full).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from closedloop.controller.report.schedule.spans import ExpiredWait, StepSpan

DAY_S = 86400.0
# Outcomes of a step that ran its whole course: their durations are what a step takes at steady state.
COMPLETE = ("done", "failed")


@dataclass(frozen=True)
class IdleGap:
    """A stretch of the horizon during which a station held no sample."""

    station: str
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class StationUse:
    station: str
    step: str
    index: int
    spans: int
    busy_s: float
    utilization: float  # busy_s / the campaign's horizon
    gaps: tuple[IdleGap, ...]

    @property
    def longest_gap_s(self) -> float:
        return max((g.duration_s for g in self.gaps), default=0.0)


@dataclass(frozen=True)
class StepUse:
    """One workflow step over all its stations. `mean_duration_s`: of its spans that ran their course
    (done or failed; None when none did); `per_day`: what it passes at steady state, stations / mean."""

    step: str
    index: int
    stations: tuple[str, ...]
    utilization: float
    mean_duration_s: float | None
    per_day: float | None


@dataclass(frozen=True)
class Schedule:
    """The campaign's schedule in numbers. `completed`: samples that left the line with a result (the
    last step done, or a failed sample at any step); `lost`, `faults`, `repeats`, `running` count spans."""

    start: float
    end: float
    stations: list[StationUse]
    steps: list[StepUse]
    completed: int
    expired: list[ExpiredWait] = field(default_factory=list)
    lost: int = 0
    faults: int = 0
    repeats: int = 0
    running: int = 0

    @property
    def horizon_s(self) -> float:
        return self.end - self.start

    @property
    def bottleneck(self) -> StepUse:
        """The busiest step (the first in workflow order on a tie)."""
        return max(self.steps, key=lambda s: (s.utilization, -s.index))

    @property
    def limiting_step(self) -> StepUse | None:
        """The step with the smallest steady-state rate: what bounds the line's throughput."""
        rated = [s for s in self.steps if s.per_day is not None]
        return min(rated, key=lambda s: (s.per_day, s.index)) if rated else None

    @property
    def predicted_per_day(self) -> float | None:
        step = self.limiting_step
        return None if step is None else step.per_day

    @property
    def completed_per_day(self) -> float | None:
        return self.completed * DAY_S / self.horizon_s if self.horizon_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The record with its derived numbers, for JSON (`closedloop validate --dry-run --json`)."""
        limit = self.limiting_step
        return {**asdict(self), "horizon_s": self.horizon_s, "bottleneck": self.bottleneck.step,
                "limiting_step": None if limit is None else limit.step, "predicted_per_day": self.predicted_per_day,
                "completed_per_day": self.completed_per_day}


def summarize(spans: Sequence[StepSpan], expired: Sequence[ExpiredWait] = ()) -> Schedule | None:
    """The schedule of `spans` (and the samples that `expired` waiting); None when nothing ever ran."""
    if not spans:
        return None
    start, end = min(s.start for s in spans), max(s.end for s in spans)
    stations = [_station_use(group, start, end) for group in _grouped(spans, lambda s: (s.index, s.station))]
    steps = [_step_use(group, stations) for group in _grouped(spans, lambda s: (s.index, s.step))]
    last = max(s.index for s in spans)
    finished = {s.trial for s in spans if (s.outcome == "done" and s.index == last) or s.outcome == "failed"}
    count = {o: sum(s.outcome == o for s in spans) for o in ("lost", "fault", "repeat", "running")}
    return Schedule(start, end, stations, steps, len(finished), list(expired), count["lost"], count["fault"],
                    count["repeat"], count["running"])


def busy_intervals(spans: Sequence[StepSpan]) -> list[tuple[float, float]]:
    """The union of the spans' intervals, in time order (a station's spans should not overlap; if the
    journal says they do, the station was still busy only once)."""
    merged: list[tuple[float, float]] = []
    for s in sorted(spans, key=lambda s: s.start):
        if merged and s.start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], s.end))
        else:
            merged.append((s.start, s.end))
    return merged


def idle_gaps(station: str, busy: Sequence[tuple[float, float]], start: float, end: float) -> list[IdleGap]:
    """The stretches of [start, end] outside `busy` (time-ordered, disjoint intervals)."""
    gaps, free_from = [], start
    for a, b in busy:
        if a > free_from:
            gaps.append(IdleGap(station, free_from, a))
        free_from = max(free_from, b)
    if end > free_from:
        gaps.append(IdleGap(station, free_from, end))
    return gaps


def _grouped(spans: Sequence[StepSpan], key: Callable[[StepSpan], tuple[int, str]]) -> list[list[StepSpan]]:
    """`spans` in groups of equal `key`, the groups in key order (workflow order first)."""
    groups: dict[tuple[int, str], list[StepSpan]] = {}
    for s in spans:
        groups.setdefault(key(s), []).append(s)
    return [groups[k] for k in sorted(groups)]


def _station_use(spans: Sequence[StepSpan], start: float, end: float) -> StationUse:
    busy = busy_intervals(spans)
    busy_s = sum(b - a for a, b in busy)
    horizon = end - start
    first = spans[0]
    return StationUse(first.station, first.step, first.index, len(spans), busy_s,
                      busy_s / horizon if horizon > 0 else 1.0, tuple(idle_gaps(first.station, busy, start, end)))


def _step_use(spans: Sequence[StepSpan], stations: Sequence[StationUse]) -> StepUse:
    first = spans[0]
    own = [u for u in stations if u.index == first.index]
    complete = [s.duration_s for s in spans if s.outcome in COMPLETE]
    mean = sum(complete) / len(complete) if complete else None
    per_day = len(own) * DAY_S / mean if mean else None
    return StepUse(first.step, first.index, tuple(u.station for u in own),
                   sum(u.utilization for u in own) / len(own), mean, per_day)
