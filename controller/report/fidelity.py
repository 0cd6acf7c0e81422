"""The report's cost view of a multi-fidelity campaign: what each source cost, the best target value
against instrument time spent, and the proxy-target relation the planner learned.

Costs are the protocol's declared costs per measurement (what the planner weighed and the budget counts),
not the steps' measured durations (the schedule section shows those).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from closedloop.controller.engine import history
from closedloop.controller.report.data import ReportData
from closedloop.controller.report.figures import Block, Note, Plot, label, layout

# Where the planner records, for each model-based proposal, how strongly it believed each source moves with
# the target when it chose (planners/fidelity_choice.py): acquisition_settings["fidelity"]["task_correlation"].
FIDELITY_SETTINGS, TASK_CORRELATION = "fidelity", "task_correlation"


def best_vs_cost(data: ReportData) -> tuple[list[float], list[float | None], list[str]]:
    """For each result in order: the declared instrument hours spent so far, the best target value so far
    (None before the first), and the source that made the result."""
    objective = data.objectives[0]
    spent, best = 0.0, None
    hours: list[float] = []
    bests: list[float | None] = []
    sources: list[str] = []
    for t in data.results:
        f = history.source_of(data.problem, t.fidelity)
        spent += f.cost
        value = t.values.get(objective.name) if f.target and t.state == "measured" else None
        if value is not None and history.feasible(data.problem, t.values):
            best = value if best is None else (max if objective.maximize else min)(best, value)
        hours.append(spent)
        bests.append(best)
        sources.append(f.name)
    return hours, bests, sources


def learned_correlation(data: ReportData) -> dict[str, list[tuple[int, float]]]:
    """Per proxy: (trial id, its correlation with the target the planner had learned when proposing that
    trial), over the model-based proposals."""
    proxies = [f.name for f in data.problem.fidelities if not f.target]
    out: dict[str, list[tuple[int, float]]] = {name: [] for name in proxies}
    for trial_id, record in sorted(data.proposals.items()):
        settings: Mapping[str, Any] = record.provenance.acquisition_settings if record is not None else {}
        chosen = settings.get(FIDELITY_SETTINGS)
        learned = chosen.get(TASK_CORRELATION) if isinstance(chosen, Mapping) else None
        for name in proxies:
            value = learned.get(name) if isinstance(learned, Mapping) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name].append((trial_id, float(value)))
    return {name: trace for name, trace in out.items() if trace}


def best_vs_cost_plot(data: ReportData) -> Block:
    if not data.results:
        return Note("Best target value vs instrument time", "no data: the campaign has no results yet")
    hours, bests, sources = best_vs_cost(data)
    objective = data.objectives[0]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=hours, y=bests, mode="lines", line={"shape": "hv", "color": "black"},
                             name=f"best {objective.name} so far"))
    for f in data.problem.fidelities:
        pick = [i for i, s in enumerate(sources) if s == f.name]
        fig.add_trace(go.Scatter(
            x=[hours[i] for i in pick], y=[bests[i] for i in pick], mode="markers",
            marker={"symbol": "circle" if f.target else "line-ns-open", "size": 9 if f.target else 12},
            name=f"{f.name} result ({f.cost:g} h each)", text=[f"trial {data.results[i].id}" for i in pick]))
    fig.update_xaxes(title_text="instrument time spent (declared cost) [h]")
    fig.update_yaxes(title_text=label(objective.name, data.unit_of_objective(objective.name)))
    return Plot("fidelity-cost", "Best target value vs instrument time", layout(fig),
                "Each result moves right by its source's declared cost; the line is the best target value "
                "measured so far (a proxy's result never sets it, it only guides the planner).")


def correlation_plot(data: ReportData) -> Block:
    traces = learned_correlation(data)
    if not traces:
        return Note("Proxy-target relation the planner learned",
                    "no model-based proposal yet: the planner learns the relation once both sources have results")
    fig = go.Figure([go.Scatter(x=[t for t, _ in trace], y=[c for _, c in trace], mode="lines+markers",
                                name=f"{name} with the target") for name, trace in traces.items()])
    fig.update_xaxes(title_text="trial proposed")
    fig.update_yaxes(title_text="learned correlation (proxy, target)", range=[-1.05, 1.05])
    return Plot("fidelity-correlation", "Proxy-target relation the planner learned", layout(fig),
                "The correlation between the sources in the planner's multi-task model when it proposed each "
                "trial: near 1 the cheap source predicts the target and is worth its cost; near 0 it is ignored.")


def fidelity_blocks(data: ReportData) -> list[Block]:
    return [best_vs_cost_plot(data), correlation_plot(data)]


__all__ = ["TASK_CORRELATION", "best_vs_cost", "fidelity_blocks", "learned_correlation"]
