"""The campaign plots of a report, as plotly figures: progress, objectives vs parameters, parallel
coordinates, Pareto front and hypervolume, the model's view, and timing.

Each function returns a `Plot` or, when the campaign lacks the data, a `Note` saying what is missing.
SVG traces only (no WebGL) except the parallel-coordinates view, which plotly only draws with WebGL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from closedloop.controller.report.data import (
    ReportData,
    best_so_far,
    hypervolume_trace,
    initial_design_end,
    instrument_hours,
    objective_matrix,
    pareto_mask,
    random_baseline,
)
from closedloop.controller.report.model_view import ModelView, loo_summary
from closedloop.controller.store.reads import TrialRecord
from closedloop.planners.space import Objective

ROW_HEIGHT = 320
COLOURS = {"initial": "#1f77b4", "planner": "#d62728", "retry": "#9467bd", "manual": "#2ca02c",
           "warm_start": "#8c564b", "failed": "#7f7f7f"}

# Earlier results (`closedloop import`) stand apart from the campaign's own trials: a diamond, open when the
# point lies outside the search space.
SYMBOLS = {"warm_start": "diamond"}
NAMES = {"warm_start": "warm start (imported)"}


def origin_groups(data: ReportData, trials: list[TrialRecord]) -> list[tuple[str, dict[str, str], list[int]]]:
    """(legend entry, marker, positions in `trials`) for each origin present; warm starts outside the
    space are a group of their own."""
    groups: dict[str, tuple[dict[str, str], list[int]]] = {}
    for i, t in enumerate(trials):
        name = NAMES.get(t.origin, f"{t.origin} trials")
        marker = {"color": COLOURS.get(t.origin, "#333"), "symbol": SYMBOLS.get(t.origin, "circle")}
        if t.id in data.outside_space:
            name, marker = f"{name}, outside the space", marker | {"symbol": f"{marker['symbol']}-open"}
        groups.setdefault(name, (marker, []))[1].append(i)
    return [(name, marker, members) for name, (marker, members) in sorted(groups.items())]


@dataclass
class Plot:
    id: str
    title: str
    figure: go.Figure
    caption: str = ""


@dataclass
class Note:
    """Shown in place of a plot the campaign has no data for."""

    title: str
    text: str


Block = Plot | Note


def label(name: str, unit: str) -> str:
    return f"{name} [{unit}]" if unit else name


def layout(fig: go.Figure, rows: int = 1, **extra: object) -> go.Figure:
    """The report's common look; `extra` overrides any of it (e.g. height)."""
    settings: dict[str, object] = {"height": max(1, rows) * ROW_HEIGHT + 80, "template": "plotly_white",
                                   "margin": {"l": 70, "r": 30, "t": 60, "b": 50},
                                   "legend": {"orientation": "h", "y": -0.2}}
    fig.update_layout(**(settings | extra))
    return fig


def _scale(o: Objective) -> dict[str, str]:
    """Axis settings for an objective: log10 where the protocol says it spans decades, with ticks at
    1, 2 and 5 per decade (plotly's default labels every digit, unreadable in small panels)."""
    return {"type": "log", "dtick": "D2"} if o.log else {"type": "linear"}


# ---- progress ------------------------------------------------------------------------------------


def progress_plot(data: ReportData) -> Block:
    """Best so far against results and against cumulative instrument time, per objective."""
    if not data.results:
        return Note("Best so far", "no data: the campaign has no measured or failed trials yet")
    hours = instrument_hours(data)
    initial_end = initial_design_end(data)
    xs = list(range(1, len(data.results) + 1))
    titles = []
    for o in data.objectives:
        titles += [f"{o.name}: best so far vs trial", f"{o.name}: best so far vs instrument time"]
    fig = make_subplots(rows=len(data.objectives), cols=2, subplot_titles=titles, horizontal_spacing=0.1)
    for row, o in enumerate(data.objectives, start=1):
        best = best_so_far(data, o)
        values = [t.values.get(o.name) for t in data.results]
        show = row == 1
        for col, x in ((1, xs), (2, hours)):
            fig.add_trace(go.Scatter(x=x, y=best, mode="lines", line={"shape": "hv", "color": "black"},
                                     name="best so far", showlegend=show and col == 1), row=row, col=col)
            for group, marker, members in origin_groups(data, data.results):
                pick = [i for i in members if values[i] is not None]
                fig.add_trace(go.Scatter(
                    x=[x[i] for i in pick], y=[values[i] for i in pick], mode="markers",
                    marker=marker | {"size": 7}, name=group, legendgroup=group,
                    text=[f"trial {data.results[i].id}" for i in pick], showlegend=show and col == 1,
                ), row=row, col=col)
        if 0 < initial_end < len(xs):
            fig.add_vrect(x0=0.5, x1=initial_end + 0.5, fillcolor="#1f77b4", opacity=0.08, line_width=0, row=row, col=1,
                          annotation_text="initial design", annotation_position="top left")
        baseline = random_baseline(data, o)
        if baseline:
            fig.add_trace(go.Scatter(x=list(range(1, len(baseline) + 1)), y=baseline, mode="lines",
                                     line={"dash": "dash", "color": "#ff7f0e"}, name="random sampling (expected)",
                                     showlegend=show), row=row, col=1)
        unit = data.unit_of_objective(o.name)
        fig.update_yaxes(title_text=label(o.name, unit), **_scale(o), row=row)
        fig.update_xaxes(title_text="result (trial with data)", row=row, col=1)
        fig.update_xaxes(title_text="instrument time [h]", row=row, col=2)
    caption = "Each point is one trial's measured value; the line is the best feasible value so far."
    if data.candidates is not None and any(random_baseline(data, o) for o in data.objectives):
        caption += " The dashed line is the exact expectation for random sampling from the candidate pool."
    else:
        caption += " No random-sampling expectation: it is only known for pool (candidate table) campaigns."
    return Plot("progress", "Best so far", layout(fig, len(data.objectives)), caption)


# ---- objectives and parameters ---------------------------------------------------------------------


def objectives_vs_parameters_plot(data: ReportData) -> Block:
    params = data.searched_parameters
    if not data.measured or not params:
        return Note("Objectives vs parameters", "no data: no trial has been measured yet")
    cols = len(params)
    fig = make_subplots(rows=len(data.objectives), cols=cols, horizontal_spacing=0.25 / cols + 0.02,
                        vertical_spacing=0.12)
    for row, o in enumerate(data.objectives, start=1):
        for col, p in enumerate(params, start=1):
            for group, marker, members in origin_groups(data, data.measured):
                pick = [data.measured[i] for i in members if o.name in data.measured[i].values]
                fig.add_trace(go.Scatter(
                    x=[t.conditions.get(p) for t in pick], y=[t.values[o.name] for t in pick], mode="markers",
                    marker=marker | {"size": 6}, name=group,
                    text=[f"trial {t.id}" for t in pick], showlegend=row == 1 and col == 1, legendgroup=group,
                ), row=row, col=col)
            fig.update_xaxes(title_text=label(p, data.unit_of_parameter(p)), row=row, col=col)
        fig.update_yaxes(title_text=label(o.name, data.unit_of_objective(o.name)), **_scale(o), row=row, col=1)
        for col in range(2, cols + 1):
            fig.update_yaxes(**_scale(o), row=row, col=col)
    caption = "Every measured trial; failed samples have no objective value and are listed in the tables below."
    return Plot("objectives-vs-parameters", "Objectives vs parameters", layout(fig, len(data.objectives)), caption)


def parallel_coordinates_plot(data: ReportData) -> Block:
    params = data.searched_parameters
    if not data.results or not params:
        return Note("All trials, parallel coordinates", "no data: the campaign has no results yet")
    first = data.objectives[0]
    dimensions = []
    for p in params:
        raw = [t.conditions.get(p) for t in data.results]
        if data.is_choice(p):
            choices = list(data.problem.space.parameter(p).values)  # type: ignore[union-attr]
            dimensions.append({"label": p, "values": [choices.index(v) if v in choices else -1 for v in raw],
                               "tickvals": list(range(len(choices))), "ticktext": choices})
        else:
            # Every result holds a value of every searched parameter.
            numbers = [float(t.conditions[p]) for t in data.results]
            dimensions.append({"label": label(p, data.unit_of_parameter(p)), "values": numbers})
    colour = _colour_values(data, first)
    dimensions.append({"label": "result", "values": [1 if t.state == "measured" else 0 for t in data.results],
                       "tickvals": [0, 1], "ticktext": ["failed", "measured"]})
    for o in data.objectives:
        values = [t.values.get(o.name, math.nan) for t in data.results]
        if o.log:
            values = [math.log10(v) if v and v > 0 else math.nan for v in values]
        dimensions.append({"label": ("log10 " if o.log else "") + o.name, "values": values})
    scale_title = ("log10 " if first.log else "") + first.name
    fig = go.Figure(go.Parcoords(
        line={"color": colour, "colorscale": "Viridis", "showscale": True, "colorbar": {"title": {"text": scale_title}},
              "reversescale": not first.maximize},
        dimensions=dimensions,
    ))
    caption = (f"One line per trial with data, coloured by {first.name} (brighter is better); failed samples take "
               "the worst colour. Drag along an axis to filter.")
    return Plot("parallel-coordinates", "All trials, parallel coordinates", layout(fig, 1, height=460), caption)


def _colour_values(data: ReportData, o: Objective) -> list[float]:
    raw = [t.values.get(o.name) for t in data.results]
    values = [(math.log10(v) if o.log and v > 0 else v) if v is not None else None for v in raw]
    known = [v for v in values if v is not None and math.isfinite(v)]
    worst = (min(known) if o.maximize else max(known)) if known else 0.0
    return [worst if v is None or not math.isfinite(v) else v for v in values]


# ---- several objectives ------------------------------------------------------------------------------


def pareto_plot(data: ReportData) -> Block:
    if len(data.objectives) < 2:
        return Note("Pareto front and hypervolume", "one objective: there is no Pareto front")
    rows, matrix = objective_matrix(data)
    trace = hypervolume_trace(data)
    if not rows or trace is None:
        return Note("Pareto front and hypervolume", "no data: no trial has a value of every objective yet")
    mask = pareto_mask(data, matrix)
    pairs = [(0, j) for j in range(1, len(data.objectives))]
    fig = make_subplots(rows=1, cols=len(pairs) + 1,
                        subplot_titles=[f"{data.objectives[j].name} vs {data.objectives[i].name}" for i, j in pairs]
                        + ["hypervolume over trials"])
    ids = [f"trial {t.id}" for t in rows]
    for col, (i, j) in enumerate(pairs, start=1):
        oi, oj = data.objectives[i], data.objectives[j]
        fig.add_trace(go.Scatter(x=matrix[~mask, i], y=matrix[~mask, j], mode="markers", name="dominated",
                                 marker={"color": "#aaaaaa", "size": 7}, text=[ids[k] for k in np.flatnonzero(~mask)],
                                 showlegend=col == 1), row=1, col=col)
        front = np.flatnonzero(mask)
        front = front[np.argsort(matrix[front, i])]
        fig.add_trace(go.Scatter(x=matrix[front, i], y=matrix[front, j], mode="markers+lines", name="Pareto front",
                                 line={"shape": "hv" if oi.maximize != oj.maximize else "vh", "color": "#d62728"},
                                 marker={"size": 9}, text=[ids[k] for k in front], showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text=label(oi.name, data.unit_of_objective(oi.name)), **_scale(oi), row=1, col=col)
        fig.update_yaxes(title_text=label(oj.name, data.unit_of_objective(oj.name)), **_scale(oj), row=1, col=col)
    xs, hv, where = trace
    fig.add_trace(go.Scatter(x=xs, y=hv, mode="lines+markers", line={"shape": "hv", "color": "black"},
                             name="hypervolume"), row=1, col=len(pairs) + 1)
    fig.update_xaxes(title_text="result (trial with data)", row=1, col=len(pairs) + 1)
    caption = (f"Red: trials no other trial beats on every objective. Hypervolume in model units (log10 where the "
               f"protocol says so, minimized objectives negated), against {where}.")
    return Plot("pareto", "Pareto front and hypervolume", layout(fig, 1), caption)


# ---- the model -------------------------------------------------------------------------------------


def model_slices_plot(data: ReportData, view: ModelView) -> Block:
    if not view.slices:
        return Note("The model along each parameter", "; ".join(view.notes) or "no data: no best point yet")
    objectives = [o for o in data.objectives if any(s.objective == o.name for s in view.slices)]
    params = list(dict.fromkeys(s.parameter for s in view.slices))
    fig = make_subplots(rows=len(objectives), cols=len(params), horizontal_spacing=0.25 / len(params) + 0.02,
                        vertical_spacing=0.12)
    for s in view.slices:
        row = next(i for i, o in enumerate(objectives, start=1) if o.name == s.objective)
        col = params.index(s.parameter) + 1
        first = row == 1 and col == 1
        if isinstance(s.x[0], str):
            fig.add_trace(go.Scatter(
                x=s.x, y=s.mean, mode="markers", marker={"color": "#1f77b4", "size": 9}, name="posterior mean",
                error_y={"type": "data", "symmetric": False, "array": [u - m for u, m in zip(s.upper, s.mean, strict=True)],
                         "arrayminus": [m - lo for m, lo in zip(s.mean, s.lower, strict=True)]},
                showlegend=False), row=row, col=col)
        else:
            fig.add_trace(go.Scatter(x=s.x + s.x[::-1], y=s.upper + s.lower[::-1], fill="toself", mode="lines",
                                     line={"width": 0}, fillcolor="rgba(31,119,180,0.2)", name="±2 sd",
                                     showlegend=first, hoverinfo="skip"), row=row, col=col)
            fig.add_trace(go.Scatter(x=s.x, y=s.mean, mode="lines", line={"color": "#1f77b4"}, name="posterior mean",
                                     showlegend=first), row=row, col=col)
        fig.add_trace(go.Scatter(x=[s.at], y=[s.mean[_nearest(s.x, s.at)]], mode="markers", name="best point",
                                 marker={"symbol": "star", "size": 12, "color": "#d62728"}, showlegend=first),
                      row=row, col=col)
        fig.update_xaxes(title_text=label(s.parameter, data.unit_of_parameter(s.parameter)), row=row, col=col)
    for row, o in enumerate(objectives, start=1):
        fig.update_yaxes(**_scale(o), row=row)
        fig.update_yaxes(title_text=label(o.name, data.unit_of_objective(o.name)), row=row, col=1)
    caption = ("The planner's GP, refitted on all results: posterior mean and ±2 sd along each parameter with the "
               "others held at the best trial (star). Slices may cross input constraints the planner never proposes beyond.")
    return Plot("model-slices", "The model along each parameter", layout(fig, len(objectives)), caption)


def _nearest(xs: list, at: object) -> int:
    if isinstance(at, str):
        return xs.index(at) if at in xs else 0
    return int(np.argmin([abs(float(x) - float(at)) for x in xs]))  # type: ignore[arg-type]


def loo_plot(data: ReportData, view: ModelView) -> Block:
    if not view.loo:
        return Note("Predicted vs measured (leave-one-out)", "; ".join(view.notes) or "no data")
    fig = make_subplots(rows=1, cols=len(view.loo), subplot_titles=[loo.objective for loo in view.loo])
    by_name = {o.name: o for o in data.objectives}
    for col, loo in enumerate(view.loo, start=1):
        o = by_name[loo.objective]
        fig.add_trace(go.Scatter(
            x=loo.measured, y=loo.predicted, mode="markers", name="trial", showlegend=col == 1,
            text=[f"trial {i}" for i in loo.trial_ids], marker={"color": "#1f77b4", "size": 8},
            error_y={"type": "data", "symmetric": False,
                     "array": [u - p for u, p in zip(loo.upper, loo.predicted, strict=True)],
                     "arrayminus": [p - lo for p, lo in zip(loo.predicted, loo.lower, strict=True)]},
        ), row=1, col=col)
        lo, hi = min(loo.measured + loo.predicted), max(loo.measured + loo.predicted)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot", "color": "black"},
                                 name="predicted = measured", showlegend=col == 1), row=1, col=col)
        unit = data.unit_of_objective(o.name)
        fig.update_xaxes(title_text="measured " + label(o.name, unit), **_scale(o), row=1, col=col)
        fig.update_yaxes(title_text="predicted (LOO)", **_scale(o), row=1, col=col)
    caption = ("Each trial predicted by the GP from all the other trials (exact leave-one-out, fixed hyperparameters), "
               "with ±2 sd. " + " ".join(f"{loo.objective}: {loo_summary(loo)}." for loo in view.loo))
    return Plot("model-loo", "Predicted vs measured (leave-one-out)", layout(fig, 1), caption)


# ---- timing --------------------------------------------------------------------------------------------


def timing_plot(data: ReportData) -> Block:
    if not data.trials:
        return Note("Planner time vs instrument time", "no data: the campaign has no trials")
    ids = [t.id for t in data.trials]
    planner = [data.planner_time_s(t.id) for t in data.trials]
    instrument = [float(t.duration_s or 0.0) / 60.0 for t in data.trials]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["planner time per trial (GP fit + acquisition optimization)",
                                        "instrument time per trial"])
    fig.add_trace(go.Bar(x=ids, y=planner, name="planner [s]", marker_color="#9467bd"), row=1, col=1)
    fig.add_trace(go.Bar(x=ids, y=instrument, name="instrument [min]", marker_color="#2ca02c"), row=2, col=1)
    fig.update_yaxes(title_text="planner [s]", row=1, col=1)
    fig.update_yaxes(title_text="instrument [min]", row=2, col=1)
    fig.update_xaxes(title_text="trial", row=2, col=1)
    total_p, total_i = sum(planner), sum(instrument) / 60.0
    caption = (f"Planner {total_p:.1f} s in all; instrument {total_i:.2f} h in all. Initial-design trials cost "
               "the planner nothing; trials without a measurement have no instrument time.")
    return Plot("timing", "Planner time vs instrument time", layout(fig, 2), caption)
