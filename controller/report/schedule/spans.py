"""Who was on which station when: the spans of a campaign's samples, read from its journal.

A line campaign (a protocol `workflow:`) journals every step of every sample as a "step" event whose
`data["phase"]` says what happened: "started" on a station, then one of "done", "failed", "fault",
"lost" or "repeat" (a crash interrupted it; a new "started" follows); "expired" when the sample waited
past the step's `max_wait` and never started it. A campaign without step events (one instrument, or a
file written before lines existed) still has a schedule: each trial's state events give one span, from
its move to "running" until it is measured, failed or abandoned, on the station in its `instrument`.

    >>> def step(trial, t, phase):  # as CampaignStore.events() reads them back
    ...     data = {"step": "coat", "index": 0, "station": "robot", "phase": phase}
    ...     return {"kind": "step", "trial_id": trial, "t": 1.7e9 + t, "virtual_t": t, "data": data}
    >>> spans = spans_from_events([step(1, 0.0, "started"), step(1, 100.0, "done"), step(2, 100.0, "started")], [])
    >>> spans[0]
    StepSpan(trial=1, step='coat', index=0, station='robot', start=0.0, end=100.0, outcome='done')
    >>> spans[1].outcome  # started, not ended yet
    'running'

Times are seconds on the campaign's clock: an event's `virtual_t` in simulation, else its wall time `t`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from closedloop.controller.store.reads import TrialRecord

Outcome = Literal["done", "failed", "fault", "lost", "repeat", "running"]
STEP_EVENT = "step"
# A step event's phase -> the outcome of the span it ends.
ENDING_PHASES: dict[str, Outcome] = {
    "done": "done", "failed": "failed", "fault": "fault", "lost": "lost", "repeat": "repeat",
}
# A one-instrument campaign's trial is one step; its trial states say how the step ended.
SINGLE_STEP = "measure"
STATE_OUTCOMES: dict[str, Outcome] = {"measured": "done", "failed": "failed", "abandoned": "fault"}


@dataclass(frozen=True)
class StepSpan:
    """One sample (`trial`) on one station for one step (`index`: its place in the workflow, from 0).
    `outcome` "running": still on the station at the journal's last entry (`end` is that entry's time)."""

    trial: int
    step: str
    index: int
    station: str
    start: float
    end: float
    outcome: Outcome

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ExpiredWait:
    """A sample that waited longer than the step's `max_wait` before a station was free: it never ran it."""

    trial: int
    step: str
    index: int
    at: float
    waited_s: float
    max_wait_s: float


def event_time(event: Mapping[str, Any], time_scale: float = 1.0) -> float:
    """When the event happened on the campaign's clock: virtual time when the engine kept one, else wall
    time (times `time_scale`, the pace of an emulator that runs faster than the clock on the wall)."""
    if event["virtual_t"] is not None:
        return float(event["virtual_t"])
    return float(event["t"]) * time_scale


def spans_from_events(
    events: Sequence[Mapping[str, Any]], trials: Iterable[TrialRecord], *, time_scale: float = 1.0
) -> list[StepSpan]:
    """Every span of every sample, in the order they started: from the step events when the campaign has
    any, else one span per trial from its state events (see the module docstring). `events`: the journal
    as `CampaignReads.events()` returns it, oldest first."""
    if any(e["kind"] == STEP_EVENT for e in events):
        spans = _step_spans(events, time_scale)
    else:
        spans = _trial_spans(events, {t.id: t for t in trials}, time_scale)
    return sorted(spans, key=lambda s: (s.start, s.index, s.trial))


def expired_waits(events: Sequence[Mapping[str, Any]], *, time_scale: float = 1.0) -> list[ExpiredWait]:
    """The samples that waited past a step's `max_wait`, in journal order."""
    out = []
    for e in events:
        data = e["data"] or {}
        if e["kind"] == STEP_EVENT and data.get("phase") == "expired":
            out.append(ExpiredWait(int(e["trial_id"]), str(data.get("step", "")), int(data.get("index", 0)),
                                   event_time(e, time_scale), float(data.get("waited_s", 0.0)),
                                   float(data.get("max_wait_s", 0.0))))
    return out


def last_time(events: Sequence[Mapping[str, Any]], time_scale: float = 1.0) -> float | None:
    """The time of the journal's latest entry on the campaign's clock (virtual time when any entry has it:
    entries without it carry wall time, which would be on another clock)."""
    virtual = [float(e["virtual_t"]) for e in events if e["virtual_t"] is not None]
    if virtual:
        return max(virtual)
    return max((event_time(e, time_scale) for e in events), default=None)


def _step_spans(events: Sequence[Mapping[str, Any]], time_scale: float) -> list[StepSpan]:
    spans: list[StepSpan] = []
    open_spans: dict[tuple[int, int], StepSpan] = {}  # (trial, step index) -> started, not yet ended
    for e in events:
        data = e["data"] or {}
        if e["kind"] != STEP_EVENT or e["trial_id"] is None:
            continue
        key = (int(e["trial_id"]), int(data.get("index", 0)))
        phase, t = data.get("phase"), event_time(e, time_scale)
        if phase == "started":
            if key in open_spans:  # started again with no end journaled: the first attempt was interrupted
                spans.append(_closed(open_spans.pop(key), t, "repeat"))
            open_spans[key] = StepSpan(key[0], str(data.get("step", "")), key[1], str(data.get("station", "")),
                                       t, t, "running")
        elif phase in ENDING_PHASES and key in open_spans:
            spans.append(_closed(open_spans.pop(key), t, ENDING_PHASES[phase]))
    return spans + _still_running(open_spans.values(), events, time_scale)


def _trial_spans(
    events: Sequence[Mapping[str, Any]], trials: Mapping[int, TrialRecord], time_scale: float
) -> list[StepSpan]:
    spans: list[StepSpan] = []
    open_spans: dict[int, StepSpan] = {}
    for e in events:
        if e["kind"] != "state" or e["trial_id"] is None:
            continue
        trial_id, t = int(e["trial_id"]), event_time(e, time_scale)
        if e["to_state"] == "running":
            trial = trials.get(trial_id)
            station = trial.instrument if trial is not None and trial.instrument else "instrument"
            open_spans[trial_id] = StepSpan(trial_id, SINGLE_STEP, 0, station, t, t, "running")
        elif e["to_state"] in STATE_OUTCOMES and trial_id in open_spans:
            spans.append(_closed(open_spans.pop(trial_id), t, STATE_OUTCOMES[e["to_state"]]))
    return spans + _still_running(open_spans.values(), events, time_scale)


def _closed(span: StepSpan, end: float, outcome: Outcome) -> StepSpan:
    return StepSpan(span.trial, span.step, span.index, span.station, span.start, max(end, span.start), outcome)


def _still_running(
    spans: Iterable[StepSpan], events: Sequence[Mapping[str, Any]], time_scale: float
) -> list[StepSpan]:
    """Spans with no end journaled, drawn up to the journal's last entry."""
    end = last_time(events, time_scale)
    return [_closed(s, s.start if end is None else end, "running") for s in spans]
