"""What a live campaign page shows, read from the campaign file as JSON: status, counts, best, what each
instrument is doing, the last events, the trials, and the report's best-so-far figure.

Everything is read through a read-only `Campaign` (SQLite WAL readers never block the running campaign;
the page is a separate process and the campaign runs the same whether or not it is open).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import Campaign
from closedloop.controller.report.data import load_report_data
from closedloop.controller.report.figures import Plot, progress_plot
from closedloop.controller.serve.control import operator_state
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.control import control_path

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


def campaign_state(path: Path) -> dict[str, Any]:
    """The whole page's data, JSON-ready."""
    with Campaign.open(path) as campaign:
        status = campaign.status()
        store = campaign.store
        trials = store.trials()
        data = load_report_data(store)
        figure = progress_plot(data)
        operator = operator_state(campaign, running=status["status"] == "running")
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
        "running": [{"trial": t.id, "instrument": t.instrument or "-", "conditions": _plain(t.conditions),
                     "elapsed_s": max(0.0, now - t.updated_at)}  # since it was dispatched or started running
                    for t in running],
        "events": [{"t": e["t"], "kind": e["kind"], "trial": e["trial_id"], "detail": e["detail"]}
                   for e in status["last_events"]],
        "trials": [{"trial": t.id, "state": t.state, "conditions": _plain(t.conditions), "values": _plain(t.values)}
                   for t in trials[-RECENT_TRIALS:]],
        "progress": json.loads(figure.figure.to_json()) if isinstance(figure, Plot) else None,
        "operator": operator,
    }


def _plain(values: dict[str, Any] | None) -> dict[str, Any]:
    """Numbers rounded for the page, NaN as None (JSON has no NaN)."""
    out: dict[str, Any] = {}
    for name, value in (values or {}).items():
        if isinstance(value, float):
            out[name] = None if not math.isfinite(value) else float(f"{value:.6g}")
        else:
            out[name] = value
    return out
