"""Instrument views of a report, from the raw artifacts and the command journal the drivers store.

- TRMC (drivers/trmc_driver.py via drivers/trmc_analysis.py): artifacts `time_s`, `dPr_over_Pr`,
  `calibration` and `fits` -> the photoconductivity transient with its bi-exponential and stretched
  exponential decay fits.
- MBE (drivers/mbe_driver.py): artifacts `rheed_t_s`, `rheed_intensity` -> RHEED oscillations; the
  journal's `<HEATER>:PV?` readbacks and `<HEATER>:SP`/`:RATE` commands -> temperature and ramp histories.

Views are chosen by the data present, not the driver's name, so a replayed or renamed instrument
that stores the same artifacts gets the same plots.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from closedloop.controller.report.data import ReportData
from closedloop.controller.report.figures import Block, Note, Plot, layout
from closedloop.controller.store.reads import CampaignReads, TrialRecord
from closedloop.drivers.trmc_analysis import ELEMENTARY_CHARGE, _biexponential, _stretched

FEATURED = 4  # trials shown per instrument view: the best and a few others for contrast
_READBACK = re.compile(r"^([A-Z][A-Z0-9_]*):PV\?$")
_SETPOINT = re.compile(r"^([A-Z][A-Z0-9_]*):SP ([-+0-9.eE]+)$")
_FIT_CURVES: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...]]] = {
    "biexponential": (_biexponential, ("A1", "tau1", "A2", "tau2")),
    "stretched_exponential": (_stretched, ("A", "tau", "beta")),
}


def featured_trials(data: ReportData) -> list[tuple[TrialRecord, str]]:
    """The best trial by the first objective, then the worst, a middle one and the latest failed sample."""
    o = data.objectives[0]
    measured = sorted((t for t in data.measured if o.name in t.values), key=lambda t: t.values[o.name],
                      reverse=o.maximize)
    picks: list[tuple[TrialRecord, str]] = []
    if measured:
        picks += [(measured[0], "best"), (measured[-1], "worst"), (measured[len(measured) // 2], "median")]
    failed = [t for t in data.results if t.state == "failed"]
    if failed:
        picks.append((failed[-1], "failed sample"))
    seen: set[int] = set()
    unique = []
    for t, why in picks:
        if t.id not in seen:
            seen.add(t.id)
            unique.append((t, why))
    return unique[:FEATURED]


def latest_and_best(data: ReportData) -> list[tuple[TrialRecord, str]]:
    """The latest measured trial and the best by the first objective: what a live page shows."""
    o = data.objectives[0]
    measured = [t for t in data.measured if o.name in t.values]
    if not measured:
        return []
    best = max(measured, key=lambda t: t.values[o.name] if o.maximize else -t.values[o.name])
    return [(measured[-1], "latest")] + ([(best, "best")] if best.id != measured[-1].id else [])


def instrument_blocks(store: CampaignReads, data: ReportData,
                      featured: list[tuple[TrialRecord, str]] | None = None) -> list[Block]:
    """Every instrument view the campaign's stored data supports for the `featured` trials (by default the
    report's: best, worst, median, a failed one); a note when there is none."""
    featured = featured_trials(data) if featured is None else featured
    artifacts = {t.id: _safe_artifacts(store, t.id) for t, _ in featured}
    blocks: list[Block] = []
    if any("dPr_over_Pr" in a for a in artifacts.values()):
        blocks.append(trmc_transients_plot(featured, artifacts))
    if any("rheed_intensity" in a for a in artifacts.values()):
        blocks.append(rheed_plot(featured, artifacts))
    if featured:
        history = temperature_history_plot(store, featured[0][0])
        if history is not None:
            blocks.append(history)
    if not blocks:
        blocks.append(Note("Instrument data", "no data: no stored transients, RHEED traces or heater readbacks "
                                              "for the featured trials" if featured else
                                              "no data: no trial has been measured yet"))
    return blocks


def _safe_artifacts(store: CampaignReads, trial_id: int) -> dict[str, Any]:
    try:
        return store.artifacts(trial_id)
    except Exception as exc:  # noqa: BLE001 - a damaged or missing artifact file must not stop the report
        return {"__error__": str(exc)}


# ---- TRMC ----------------------------------------------------------------------------------------------


def trmc_transients_plot(featured: list[tuple[TrialRecord, str]], artifacts: dict[int, dict[str, Any]]) -> Block:
    shown = [(t, why) for t, why in featured if "dPr_over_Pr" in artifacts[t.id]]
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[f"trial {t.id} ({why})" for t, why in shown])
    for col, (t, _) in enumerate(shown, start=1):
        a = artifacts[t.id]
        t_ns, phi = _photoconductivity(a)
        first = col == 1
        fig.add_trace(go.Scatter(x=t_ns, y=phi, mode="lines", line={"color": "#7f7f7f", "width": 1},
                                 name="measured", showlegend=first), row=1, col=col)
        fits = a.get("fits") or {}
        t_peak = _number((fits.get("summary") or {}).get("t_peak_ns"))
        for (name, (curve, keys)), colour in zip(_FIT_CURVES.items(), ("#d62728", "#1f77b4"), strict=True):
            fit = fits.get(name) or {}
            if not fit.get("ok") or not math.isfinite(t_peak):
                continue
            params = [float(fit["params"][k]) for k in keys]
            tt = np.linspace(t_peak, float(t_ns[-1]), 400)
            fig.add_trace(go.Scatter(x=tt, y=curve(tt * 1e-9, *params), mode="lines", line={"color": colour},
                                     name=f"{name} fit", showlegend=first), row=1, col=col)
        fig.update_xaxes(title_text="time after excitation [ns]", row=1, col=col)
    fig.update_yaxes(title_text="φΣμ [cm²/(V·s)]", row=1, col=1)
    caption = ("Photoconductivity transients φΣμ(t) converted from ΔP/P with each trial's stored calibration, and the "
               "decay fits the analysis stored (drawn from the fitted peak on). A failed sample shows no signal above noise.")
    return Plot("trmc-transients", "TRMC transients", layout(fig, 1), caption)


def _number(value: Any) -> float:
    """A stored number; the analysis stores NaN as null (JSON has no NaN)."""
    return math.nan if value is None else float(value)


def _photoconductivity(a: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(time in ns, phi_sum_mu in cm^2/(V s)) from the raw record, as drivers.trmc_analysis converts it."""
    t = np.asarray(a["time_s"], dtype=float)
    y = np.asarray(a["dPr_over_Pr"], dtype=float)
    cal = a.get("calibration") or {}
    summary = (a.get("fits") or {}).get("summary") or {}
    baseline = _number(summary.get("baseline"))
    if not math.isfinite(baseline):
        baseline = float(np.mean(y[t <= 0.25 * t[0]]))  # the analysis' pre-trigger baseline
    scale = _number(cal.get("A")) * ELEMENTARY_CHARGE * _number(cal.get("I0")) * _number(cal.get("F_light"))
    if not (math.isfinite(scale) and scale > 0):
        return t * 1e9, -(y - baseline)  # no calibration stored: show the raw signal's shape
    return t * 1e9, -(y - baseline) / scale


# ---- MBE -------------------------------------------------------------------------------------------------


def rheed_plot(featured: list[tuple[TrialRecord, str]], artifacts: dict[int, dict[str, Any]]) -> Block:
    fig = go.Figure()
    for t, why in featured:
        a = artifacts[t.id]
        if "rheed_intensity" not in a:
            continue
        x = np.asarray(a.get("rheed_t_s", np.arange(len(a["rheed_intensity"]))), dtype=float) / 60.0
        fig.add_trace(go.Scatter(x=x, y=np.asarray(a["rheed_intensity"], dtype=float), mode="lines",
                                 name=f"trial {t.id} ({why})", line={"width": 1}))
    fig.update_xaxes(title_text="growth time [min]")
    fig.update_yaxes(title_text="RHEED specular intensity [a.u.]")
    caption = ("RHEED specular-spot intensity during growth: one oscillation per monolayer; damping means "
               "roughening, a flat trace no layer-by-layer growth.")
    return Plot("mbe-rheed", "RHEED traces", layout(fig, 1), caption)


def temperature_history_plot(store: CampaignReads, trial: TrialRecord) -> Block | None:
    """Heater readbacks and setpoints over the trial, from the command journal; None without readbacks."""
    rows = store.commands(trial.id)
    readbacks: dict[str, tuple[list[float], list[float]]] = {}
    setpoints: dict[str, tuple[list[float], list[float]]] = {}
    start: float | None = None
    asked: str | None = None
    for row in rows:
        when = row["virtual_t"] if row["virtual_t"] is not None else row["t"]
        start = when if start is None else start
        minutes = (when - start) / 60.0
        if row["direction"] == "tx":
            match = _READBACK.match(row["text"])
            asked = match.group(1) if match else None
            sp = _SETPOINT.match(row["text"])
            if sp:
                xs, ys = setpoints.setdefault(sp.group(1), ([], []))
                xs.append(minutes)
                ys.append(float(sp.group(2)))
        elif asked is not None:
            try:
                value = float(row["text"])
            except ValueError:
                asked = None
                continue
            xs, ys = readbacks.setdefault(asked, ([], []))
            xs.append(minutes)
            ys.append(value)
            asked = None
    if not readbacks:
        return None
    names = sorted(readbacks)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=names)
    end = max(max(xs) for xs, _ in readbacks.values())
    for panel, name in enumerate(names, start=1):
        xs, ys = readbacks[name]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="readback", line={"color": "#d62728"},
                                 showlegend=panel == 1), row=panel, col=1)
        if name in setpoints:
            sx, sy = setpoints[name]
            fig.add_trace(go.Scatter(x=[*sx, end], y=[*sy, sy[-1]], mode="lines",
                                     line={"shape": "hv", "dash": "dash", "color": "black"}, name="setpoint",
                                     showlegend=panel == 1), row=panel, col=1)
        fig.update_yaxes(title_text="T [degC]", row=panel, col=1)
    fig.update_xaxes(title_text=f"minutes since trial {trial.id} started", row=len(names), col=1)
    caption = (f"Heater temperatures of trial {trial.id} (the best) as read back during the run, and the setpoints "
               "sent; the slope of each ramp is limited by the driver's declared ramp rate.")
    return Plot("temperature-history", "Temperature and ramp history", layout(fig, len(names), height=220 * len(names) + 120),
                caption)
