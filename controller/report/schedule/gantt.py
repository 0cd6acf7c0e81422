"""The schedule as a Gantt chart: one row per station, grouped by workflow step, one bar per sample's step
on it, coloured by how the step ended. One trace per outcome (not per sample), so 200 samples through a
three-step line are six traces of 600 bars: the page stays quick."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from closedloop.controller.report.figures import Block, Note, Plot, layout
from closedloop.controller.report.schedule.spans import StepSpan
from closedloop.controller.report.schedule.summary import Schedule

OUTCOME_COLOURS = {"done": "#2ca02c", "failed": "#7f7f7f", "fault": "#d62728", "lost": "#8c564b",
                   "repeat": "#ff7f0e", "running": "#1f77b4"}
LABELLED_SAMPLES = 40  # up to this many samples each bar carries its trial number; beyond, only the hover does
ROW_PX = 34


def row_label(step: str, station: str) -> str:
    return f"{step} · {station}"


def time_unit(horizon_s: float) -> tuple[str, float]:
    """Minutes for a campaign of a few hours, hours for a longer one."""
    return ("min", 60.0) if horizon_s < 3 * 3600 else ("h", 3600.0)


def gantt_plot(spans: Sequence[StepSpan], schedule: Schedule | None) -> Block:
    if schedule is None or not spans:
        return Note("Schedule", "no data: no sample has started on a station")
    unit, size = time_unit(schedule.horizon_s)
    rows = [row_label(u.step, u.station) for u in schedule.stations]  # workflow order
    labelled = len({s.trial for s in spans}) <= LABELLED_SAMPLES
    fig = go.Figure()
    for outcome, colour in OUTCOME_COLOURS.items():
        chosen = [s for s in spans if s.outcome == outcome]
        if not chosen:
            continue
        fig.add_trace(go.Bar(
            orientation="h", name=outcome, marker={"color": colour, "line": {"width": 0.5, "color": "white"}},
            y=[row_label(s.step, s.station) for s in chosen],
            base=[(s.start - schedule.start) / size for s in chosen],
            x=[s.duration_s / size for s in chosen],
            customdata=[[s.trial, s.step, s.station, s.duration_s / 60.0] for s in chosen],
            hovertemplate=("trial %{customdata[0]}<br>%{customdata[1]} on %{customdata[2]}<br>"
                           f"%{{customdata[3]:.1f}} min, {outcome}<extra></extra>"),
            text=[str(s.trial) for s in chosen] if labelled else None,
            textposition="inside", insidetextanchor="middle",
        ))
    fig.update_layout(barmode="overlay", hovermode="closest", bargap=0.25)
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed")
    fig.update_xaxes(title_text=f"time since the first step started [{unit}]")
    caption = ("Every sample's steps on the stations, coloured by how each ended: done, failed (a failed sample), "
               "fault (the instrument faulted), lost or repeat (a crash interrupted it), running (no end in the "
               "journal yet). Hover a bar for its trial and duration.")
    if schedule.expired:
        caption += f" {len(schedule.expired)} sample(s) waited past a step's max_wait and never ran it (no bar)."
    return Plot("schedule-gantt", "Schedule", layout(fig, 1, height=max(300, ROW_PX * len(rows) + 170)), caption)
