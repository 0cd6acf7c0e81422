"""What a live campaign page shows, read from the campaign file as JSON: status, counts, best, what each
instrument is doing, the last events, the trials, and the report's best-so-far figure.

Everything is read through a read-only `Campaign` (SQLite WAL readers never block the running campaign;
the page is a separate process and the campaign runs the same whether or not it is open).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import Campaign
from closedloop.controller.report.data import load_report_data
from closedloop.controller.report.figures import (
    Block,
    Plot,
    loo_plot,
    model_slices_plot,
    objectives_vs_parameters_plot,
    progress_plot,
)
from closedloop.controller.report.instruments import instrument_blocks, latest_and_best
from closedloop.controller.report.model_view import model_view
from closedloop.controller.serve.control import operator_state
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.control import control_path
from closedloop.controller.store.reads import CampaignReads, TrialRecord

RECENT_TRIALS = 200  # the page's table; the report has every trial


def change_marker(path: Path) -> tuple[int, ...]:
    """What changes whenever the campaign writes anything (see `CampaignReads.change_marker`), or a request
    to it is made or answered (its control file's modification time)."""
    with CampaignStore.open(path) as store:
        marker = store.change_marker()
    try:
        requested = control_path(path).stat().st_mtime_ns
    except OSError:
        requested = 0
    return (*marker, requested)


def result_count(path: Path) -> int:
    with CampaignStore.open(path) as store:
        return len(store.trials(states=["measured", "failed"]))


def campaign_figures(path: Path) -> dict[str, Any]:
    """The page's figures (the report's: best so far, objectives vs parameters, the latest and the best
    trial's instrument data). They change only with the results, so the server builds them once per new
    result (`result_count`), not on every write: building them is most of a state's cost."""
    with CampaignStore.open(path) as store:
        data = load_report_data(store)
        figure = progress_plot(data)
        figures = [objectives_vs_parameters_plot(data), *instrument_blocks(store, data, latest_and_best(data))]
    return {"figures_version": len(data.results),
            "progress": json.loads(figure.figure.to_json()) if isinstance(figure, Plot) else None,
            "figures": [plot_json(block) for block in figures]}


def campaign_state(path: Path) -> dict[str, Any]:
    """What changes with every write: status, counts, best, what runs, the trials, the journal, what
    waits for the operator. JSON-ready."""
    with Campaign.open(path) as campaign:
        status = campaign.status()
        store = campaign.store
        trials = store.trials()
        operator = operator_state(campaign, running=status["status"] == "running")
        steps = {t.id: _current_step(store, t.id) for t in trials if t.state in ("dispatched", "running")}
        expected = expected_durations(store, trials)
    running = [t for t in trials if t.state in ("dispatched", "running")]
    now = time.time()
    return {
        "name": status["name"],
        "status": status["status"],
        "stop_reason": status["stop_reason"],
        "results": status["results"],
        "budget": status["budget"],
        "counts": status["counts"],
        "best": status["best"],
        "marker": list(change_marker(path)),
        "running": [{"trial": t.id, "instrument": t.instrument or "-", "step": steps.get(t.id, ""),
                     "conditions": _plain(t.conditions),
                     "elapsed_s": max(0.0, now - t.updated_at),  # since it was dispatched or started running
                     "expected_s": expected.get(t.instrument or "")}
                    for t in running],
        "events": [{"t": e["t"], "kind": e["kind"], "trial": e["trial_id"], "detail": e["detail"]}
                   for e in status["last_events"]],
        "trials": [{"trial": t.id, "state": t.state, "conditions": _plain(t.conditions), "values": _plain(t.values)}
                   for t in trials[-RECENT_TRIALS:]],
        "operator": operator,
    }


def plot_json(block: Block) -> dict[str, Any]:
    """A report figure as the page draws it: its id, title and caption, and plotly's JSON (or a note)."""
    if isinstance(block, Plot):
        return {"id": block.id, "title": block.title, "caption": block.caption,
                "figure": json.loads(block.figure.to_json())}
    return {"id": block.title.lower().replace(" ", "-"), "title": block.title, "caption": block.text, "figure": None}


def expected_durations(store: CampaignReads, trials: list[TrialRecord]) -> dict[str, float]:
    """Per instrument, the median wall time from a trial's start to its result over its last ten trials:
    what a running trial can be expected to take. Wall time, not the trials' `duration_s` (instrument time,
    virtual or scaled with an emulator): it is shown beside how long the trial has been running."""
    instrument_of = {t.id: t.instrument or "" for t in trials}
    started: dict[int, tuple[str, float]] = {}
    durations: dict[str, list[float]] = {}
    for e in store.events(kinds=["state"]):
        if e["to_state"] == "running" and e["trial_id"] is not None:
            started[e["trial_id"]] = (instrument_of.get(e["trial_id"], ""), float(e["t"]))
        elif e["to_state"] in ("measured", "failed") and e["trial_id"] in started:
            instrument, t0 = started.pop(e["trial_id"])
            durations.setdefault(instrument, []).append(float(e["t"]) - t0)
    return {name: statistics.median(d[-10:]) for name, d in durations.items()}


def _current_step(store: CampaignReads, trial_id: int) -> str:
    """The step of a line a running sample is at ("" outside a line): its last step event."""
    last = store.events(trial_id=trial_id, kinds=["step"], limit=1)
    return str((last[0]["data"] or {}).get("step", "")) if last else ""


def _plain(values: dict[str, Any] | None) -> dict[str, Any]:
    """Numbers rounded for the page, NaN as None (JSON has no NaN)."""
    out: dict[str, Any] = {}
    for name, value in (values or {}).items():
        if isinstance(value, float):
            out[name] = None if not math.isfinite(value) else float(f"{value:.6g}")
        else:
            out[name] = value
    return out


def model_figures(path: Path) -> dict[str, Any]:
    """The report's view of the model (slices through the best point, leave-one-out), fitted on the
    campaign's results now. A fit costs CPU the campaign may need: the page asks only when it is opened."""
    with CampaignStore.open(path) as store:
        data = load_report_data(store)
    view = model_view(data)
    return {"results": len(data.results), "notes": list(view.notes),
            "figures": [plot_json(model_slices_plot(data, view)), plot_json(loo_plot(data, view))]}
