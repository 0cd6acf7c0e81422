"""The single-diode model of a solar cell under illumination, solved exactly (Lambert W).

J = Jph - J0 (exp((V + J Rs) / (n Vt)) - 1) - (V + J Rs) / Rsh, with J the current density the cell
delivers (positive in the power quadrant), V the terminal voltage, current densities in A/cm^2 and
resistances in ohm*cm^2. An SMU measures the opposite sign (current into the cell) times the cell area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import lambertw

THERMAL_VOLTAGE = 0.025852  # kT/q at 300 K, V
_MPP_GRID = np.linspace(0.0, 1.2, 601)  # volts searched for the maximum power point (2 mV apart)


@dataclass(frozen=True)
class DiodeParameters:
    """One cell: photocurrent and dark saturation current (A/cm^2), ideality, series and shunt
    resistance (ohm*cm^2)."""

    jph: float
    j0: float
    n: float
    rs: float
    rsh: float


def current_density(voltage: np.ndarray, jph: np.ndarray, j0: np.ndarray, n: np.ndarray, rs: np.ndarray,
                    rsh: np.ndarray) -> np.ndarray:
    """J(V) in A/cm^2, broadcast over the parameter arrays and `voltage` (the explicit solution)."""
    a = n * THERMAL_VOLTAGE
    total = rs + rsh
    # W(x e^y) in log space: x e^y overflows for large forward bias, its logarithm does not.
    log_arg = np.log(rs * rsh * j0 / (a * total)) + rsh * (rs * (jph + j0) + voltage) / (a * total)
    w = _lambertw_of_exp(log_arg)
    return (rsh * (jph + j0) - voltage) / total - (a / rs) * w


def _lambertw_of_exp(log_x: np.ndarray) -> np.ndarray:
    """W(exp(log_x)) without overflow: the principal branch below e^500, its asymptotic expansion above
    (W(x) = L - ln L + ln L / L with L = ln x, already exact to ~1e-6 relative there)."""
    log_x = np.asarray(log_x, dtype=float)
    small = log_x < 500.0
    out = np.empty_like(log_x)
    out[small] = lambertw(np.exp(log_x[small])).real
    big = log_x[~small]
    w = big - np.log(big)
    for _ in range(3):  # Newton on w + ln w = L
        w = w - (w + np.log(w) - big) / (1.0 + 1.0 / w)
    out[~small] = w
    return out


def jv_curve(voltage: np.ndarray, cell: DiodeParameters) -> np.ndarray:
    """J(V) of one cell, A/cm^2."""
    return current_density(np.asarray(voltage, dtype=float), np.array(cell.jph), np.array(cell.j0),
                           np.array(cell.n), np.array(cell.rs), np.array(cell.rsh))


def max_power_density(jph: np.ndarray, j0: np.ndarray, n: np.ndarray, rs: np.ndarray, rsh: np.ndarray) -> np.ndarray:
    """Maximum power density (W/cm^2) of many cells at once: the best of a 2 mV grid, refined by the
    parabola through it and its neighbours. 0 for a cell that delivers no power."""
    column = [np.asarray(p, dtype=float)[:, None] for p in (jph, j0, n, rs, rsh)]
    power = _MPP_GRID[None, :] * current_density(_MPP_GRID[None, :], *column)
    k = np.clip(np.argmax(power, axis=1), 1, _MPP_GRID.size - 2)
    rows = np.arange(power.shape[0])
    left, mid, right = power[rows, k - 1], power[rows, k], power[rows, k + 1]
    curvature = left - 2.0 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    peak = mid - 0.25 * (left - right) * np.clip(shift, -1.0, 1.0)
    return np.maximum(np.maximum(peak, power.max(axis=1)), 0.0)


def cell_figures(cell: DiodeParameters, lamp_power: float = 0.1) -> dict[str, float]:
    """The cell's noise-free figures: pce (%) under `lamp_power` (W/cm^2), voc (V), jsc (mA/cm^2), ff."""
    jsc = float(jv_curve(np.array([0.0]), cell)[0])
    pmax = float(max_power_density(*(np.array([p]) for p in (cell.jph, cell.j0, cell.n, cell.rs, cell.rsh)))[0])
    low, high = 0.0, 2.0  # J falls through 0 once between them for any cell with a photocurrent
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if jv_curve(np.array([mid]), cell)[0] > 0 else (low, mid)
    voc = 0.5 * (low + high)
    ff = pmax / (jsc * voc) if jsc > 0 and voc > 0 else 0.0
    return {"pce": 100.0 * pmax / lamp_power, "voc": voc, "jsc": 1e3 * jsc, "ff": ff}
