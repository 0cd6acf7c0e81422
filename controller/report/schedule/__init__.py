"""The schedule of a campaign: which sample was on which station when (`spans`), how busy each station and
step was and what held the line back (`summary`), and its Gantt chart (`gantt`). Read from the journal, so
a dry run, a live campaign and a campaign file from before lines existed all have one."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from closedloop.controller.report.schedule.spans import (
    ExpiredWait,
    StepSpan,
    event_time,
    expired_waits,
    spans_from_events,
)
from closedloop.controller.report.schedule.summary import IdleGap, Schedule, StationUse, StepUse, summarize
from closedloop.controller.store.reads import TrialRecord

__all__ = ["ExpiredWait", "IdleGap", "Schedule", "StationUse", "StepSpan", "StepUse", "event_time",
           "expired_waits", "schedule_of", "spans_from_events", "summarize"]


def schedule_of(
    events: Sequence[Mapping[str, Any]], trials: Iterable[TrialRecord], *, time_scale: float = 1.0
) -> tuple[list[StepSpan], Schedule | None]:
    """The spans and their summary from a campaign's journal and trials (as the store reads them)."""
    spans = spans_from_events(events, trials, time_scale=time_scale)
    return spans, summarize(spans, expired_waits(events, time_scale=time_scale))
