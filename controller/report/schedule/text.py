"""The schedule in a few sentences, for the dry run's printout and under the report's Gantt chart."""

from __future__ import annotations

from closedloop.controller.report.schedule.summary import Schedule, StationUse


def duration_text(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def station_line(u: StationUse) -> str:
    return (f"{u.step} · {u.station}: {u.utilization:.1%} busy ({u.spans} span{'s' if u.spans != 1 else ''}, "
            f"longest idle {duration_text(u.longest_gap_s)})")


def summary_lines(s: Schedule) -> list[str]:
    """The bottleneck, the steady-state rate, and what the campaign finished (and lost) in its horizon."""
    b = s.bottleneck
    lines = [f"bottleneck: {b.step} ({b.utilization:.1%} busy"
             + (f", mean of {len(b.stations)} stations)" if len(b.stations) > 1 else ")")]
    limit = s.limiting_step
    if limit is not None and limit.mean_duration_s is not None and limit.per_day is not None:
        count = len(limit.stations)
        line = (f"predicted: {limit.per_day:.0f} films per day at steady state ({limit.step}: "
                f"{count} station{'s' if count != 1 else ''}, {duration_text(limit.mean_duration_s)} a sample)")
        if limit.index != b.index:
            line += f"; {b.step} was busier here, the line was not kept full"
        lines.append(line)
    else:
        lines.append("predicted: no steady-state rate, no step has run its course yet")
    per_day = s.completed_per_day
    rate = f" ({per_day:.0f} a day)" if per_day is not None else ""
    lines.append(f"finished: {s.completed} sample(s) with a result in {duration_text(s.horizon_s)}{rate}")
    incidents = [(len(s.expired), "sample(s) expired waiting for a station"), (s.lost, "step(s) lost in a crash"),
                 (s.faults, "step(s) ended by an instrument fault"), (s.repeats, "step(s) repeated after a crash"),
                 (s.running, "step(s) still running")]
    if any(n for n, _ in incidents):
        lines.append("incidents: " + ", ".join(f"{n} {what}" for n, what in incidents if n))
    return lines


def expired_warning(s: Schedule) -> str | None:
    """What to do about samples that waited past a step's `max_wait`; None when none did."""
    if not s.expired:
        return None
    steps = ", ".join(dict.fromkeys(e.step for e in s.expired))
    return (f"{len(s.expired)} sample(s) waited longer than max_wait for a free station ({steps}) and never ran "
            "that step: add stations there, raise max_wait, or start fewer samples at once")
