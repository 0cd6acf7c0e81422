"""J-V analysis of a solar cell: the SMU's forward and reverse sweeps -> PCE, Voc, Jsc, FF.

Raw data (stored as artifacts by drivers/smu_driver.py, so a later version can recompute the values):
`voltage_forward_V`, `current_forward_A`, `voltage_reverse_V`, `current_reverse_A` (what the SMU read:
current into the cell, negative while it delivers power) and `jv_setup` (cell area in cm^2, lamp power
in mW/cm^2, compliance in A).

Per sweep, with J = -I / area in mA/cm^2 (positive in the power quadrant):
- Jsc: J at V = 0, from a straight line through the points within 50 mV of it (noise averages out);
- Voc: where J first falls from > 0 to <= 0 at V > 0, from a straight line through the points around it;
- Pmax: the vertex of a parabola fitted to the largest V*J between 0 and Voc and its neighbours (3 each
  side; the largest measured point when the fit has no vertex there); FF = Pmax / (Jsc Voc); PCE = Pmax / lamp power.
The values reported are the means of both sweeps; the per-sweep figures and the hysteresis index
(PCE_reverse - PCE_forward) / PCE_reverse are in the `jv_figures` artifact.

A cell that gives no usable curve is a failed sample with its reason, never an exception: no photocurrent
(Jsc below 0.05 mA/cm^2 or 5 noise sd), no open-circuit crossing within the sweep (a short that never
lets the voltage build up, or a cell beyond the sweep), or an ohmic curve (Voc < 0.1 V or FF < 0.3: a
pinhole or shunt). Input that is not one J-V measurement (unequal or too short arrays, NaN, a sweep that
does not span 0 V, a bad setup) raises ValueError naming what is wrong; so does compliance reached
between 0 V and Voc (the figures would be clipped: raise the compliance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from closedloop.drivers.base import Measurement
from closedloop.drivers.smu import RAW_SWEEPS
from closedloop.drivers.trmc_analysis import _json_safe

ANALYSIS_NAME = "jv-sweep"
ANALYSIS_VERSION = "1.0"
UNITS = {"pce": "%", "voc": "V", "jsc": "mA/cm^2", "ff": ""}
RAW_ARTIFACTS = RAW_SWEEPS
MIN_POINTS = 10
MIN_JSC = 0.05  # mA/cm^2: below this (or 5 noise sd) the cell gives no photocurrent
MIN_VOC = 0.1  # V
MIN_FF = 0.3  # an ohmic resistor's curve has FF 0.25


@dataclass(frozen=True)
class SweepFigures:
    """One sweep's figures; `failure` says why the cell has none (then the numbers are nan)."""

    pce: float  # %
    voc: float  # V
    jsc: float  # mA/cm^2
    ff: float
    pmax: float  # mW/cm^2
    vmp: float  # V
    noise: float  # mA/cm^2, sd of one point
    failure: str | None = None


def analyze_sweep(voltage_V: np.ndarray, current_A: np.ndarray, setup: Mapping[str, float]) -> SweepFigures:
    """The figures of one sweep (either direction). ValueError for input that is not a J-V sweep."""
    area, lamp, compliance = _setup(setup)
    v, i = _validated_sweep(voltage_V, current_A)
    j = -1e3 * i / area  # mA/cm^2, photocurrent positive
    noise = float(1.4826 * np.median(np.abs(np.diff(j, 2) - np.median(np.diff(j, 2)))) / math.sqrt(6.0))
    jsc = _line_at(v, j, 0.0, 0.05)
    if not jsc > max(MIN_JSC, 5.0 * noise):
        return _failed(f"no photocurrent: Jsc {jsc:.3g} mA/cm^2 (needs > {max(MIN_JSC, 5.0 * noise):.2g})", noise)
    voc = _open_circuit(v, j)
    if voc is None:
        return _failed(f"no open-circuit crossing: J stays above 0 up to {v[-1]:.3g} V (a shorted cell, or the sweep "
                       "stops below Voc)", noise)
    if np.any((np.abs(i) >= 0.999 * compliance) & (v >= 0.0) & (v <= voc)):
        raise ValueError(f"the current reached the compliance {compliance:g} A between 0 V and Voc: the figures "
                         "would be clipped; raise the compliance")
    pmax, vmp = _max_power(v, j, voc)
    ff = pmax / (jsc * voc)
    if voc < MIN_VOC or ff < MIN_FF:
        return _failed(f"ohmic J-V curve (Voc {voc:.3g} V, FF {ff:.2f}): a pinhole short or shunt", noise)
    return SweepFigures(pce=100.0 * pmax / lamp, voc=voc, jsc=jsc, ff=ff, pmax=pmax, vmp=vmp, noise=noise)


def analyze_to_measurement(artifacts: Mapping[str, Any], *, instrument: str = "smu", duration_s: float = 0.0) -> Measurement:
    """A Measurement of pce, voc, jsc and ff from the raw sweeps (`RAW_ARTIFACTS`); the raw data and the
    per-sweep figures as artifacts. A cell without a usable curve is a failed sample with the reason."""
    missing = [name for name in RAW_ARTIFACTS if name not in artifacts]
    if missing:
        raise ValueError(f"a J-V measurement needs the artifacts {list(RAW_ARTIFACTS)}; missing {missing}")
    setup = {k: float(v) for k, v in artifacts["jv_setup"].items()}
    sweeps = {
        direction: analyze_sweep(artifacts[f"voltage_{direction}_V"], artifacts[f"current_{direction}_A"], setup)
        for direction in ("forward", "reverse")
    }
    forward, reverse = sweeps["forward"], sweeps["reverse"]
    figures: dict[str, Any] = {direction: asdict(f) for direction, f in sweeps.items()}
    ok = forward.failure is None and reverse.failure is None
    if ok:
        figures["hysteresis_index"] = (reverse.pce - forward.pce) / reverse.pce
    raw = {name: np.asarray(artifacts[name], dtype=np.float64) for name in RAW_ARTIFACTS[:4]}
    common: dict[str, Any] = {
        "artifacts": {**raw, "jv_setup": setup, "jv_figures": _json_safe(figures)},
        "analysis": ANALYSIS_NAME,
        "analysis_version": ANALYSIS_VERSION,
        "instrument": instrument,
        "duration_s": duration_s,
    }
    if not ok:
        direction, failed = next((d, f) for d, f in sweeps.items() if f.failure is not None)
        return Measurement(status="failed_sample", detail=f"{direction} sweep: {failed.failure}", **common)
    values = {name: 0.5 * (getattr(forward, name) + getattr(reverse, name)) for name in UNITS}
    return Measurement(values=values, units=dict(UNITS), **common)


def _failed(reason: str, noise: float) -> SweepFigures:
    nan = math.nan
    return SweepFigures(pce=nan, voc=nan, jsc=nan, ff=nan, pmax=nan, vmp=nan, noise=noise, failure=reason)


def _setup(setup: Mapping[str, float]) -> tuple[float, float, float]:
    values = []
    for name in ("area_cm2", "lamp_power_mW_cm2", "compliance_A"):
        value = setup.get(name)
        if value is None or not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"jv_setup.{name} must be a positive number, got {value!r} (setup: {dict(setup)})")
        values.append(float(value))
    return values[0], values[1], values[2]


def _validated_sweep(voltage_V: np.ndarray, current_A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, I) in increasing V; a reverse sweep is turned around."""
    v = np.asarray(voltage_V, dtype=float)
    i = np.asarray(current_A, dtype=float)
    if v.ndim != 1 or v.shape != i.shape:
        raise ValueError(f"voltage and current must be 1-D arrays of equal length, got {v.shape} and {i.shape}")
    if v.size < MIN_POINTS:
        raise ValueError(f"a J-V sweep needs at least {MIN_POINTS} points, got {v.size}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(i))):
        raise ValueError("voltage and current must be finite (no NaN/inf): check the SMU transfer")
    order = np.argsort(v, kind="stable")
    v, i = v[order], i[order]
    if not np.all(np.diff(v) > 0):
        raise ValueError("a sweep's voltages must be distinct (one point per voltage)")
    if not v[0] <= 0.0 < v[-1]:
        raise ValueError(f"the sweep {v[0]:.3g}..{v[-1]:.3g} V must span 0 V (Jsc) and go forward of it (Voc)")
    return v, i


def _line_at(v: np.ndarray, j: np.ndarray, at: float, half_width: float) -> float:
    """J at V = `at` from a straight line through the points within `half_width` of it (>= 2 nearest)."""
    near = np.flatnonzero(np.abs(v - at) <= half_width)
    if near.size < 2:
        near = np.argsort(np.abs(v - at))[:2]
    slope, intercept = np.polyfit(v[near] - at, j[near], 1)
    return float(intercept)


def _open_circuit(v: np.ndarray, j: np.ndarray) -> float | None:
    """Voc: the first fall of J through 0 at V > 0, refined by a line through 3 points each side."""
    positive = j > 0
    crossings = np.flatnonzero(positive[:-1] & ~positive[1:] & (v[1:] > 0))
    if crossings.size == 0:
        return None
    k = int(crossings[0])
    window = slice(max(0, k - 2), min(v.size, k + 4))
    slope, intercept = np.polyfit(v[window], j[window], 1)
    linear = -intercept / slope if slope < 0 else math.nan
    fallback = float(v[k] - j[k] * (v[k + 1] - v[k]) / (j[k + 1] - j[k]))
    return float(linear) if v[k] <= linear <= v[k + 1] else fallback


def _max_power(v: np.ndarray, j: np.ndarray, voc: float) -> tuple[float, float]:
    """(Pmax in mW/cm^2, Vmp) between 0 V and Voc."""
    inside = np.flatnonzero((v >= 0.0) & (v <= voc))
    power = v * j
    if inside.size == 0:
        return 0.0, 0.0
    k = int(inside[np.argmax(power[inside])])
    window = slice(max(0, k - 3), min(v.size, k + 4))
    if window.stop - window.start >= 5:
        a, b, c = np.polyfit(v[window], power[window], 2)
        if a < 0:
            vertex = -b / (2.0 * a)
            if v[window.start] <= vertex <= v[window.stop - 1]:
                return float(np.polyval((a, b, c), vertex)), float(vertex)
    return float(power[k]), float(v[k])
