"""TRMC transient analysis: an averaged dPr/Pr record -> phi_sum_mu_max, tau_half and decay fits.

Conversion (Saeki et al.): phi_sum_mu(t) = -(dPr/Pr(t) - baseline) / (A * e * I0 * F_light), with A the
cavity sensitivity for volume conductivity (cm/S), I0 the incident photons per cm^2 per pulse and
F_light = (1 - 10^-OD) / thickness (1/cm). The calibration dict carries A, I0 and F_light.

- baseline: mean of the earliest 75 % of the pre-trigger record (t < 0); noise: its robust sd.
- phi_sum_mu_max: the maximum of a quartic fitted to the raw trace over the part of the peak above
  70 % of a lightly smoothed maximum. The raw maximum of a noisy trace is biased upward at low signal; the fit is not.
- tau_half: time from the peak until the signal first falls to half the peak, located on a trace
  smoothed over +-10 % of the time since the peak and refined by a straight-line fit to the raw trace
  around the crossing. The cavity response (tau_cav = Q/(2 pi f0), ~44 ns) is part of this observable.
- fits, on the decay from the peak on, with time counted from the excitation (t = 0), weighted by the noise:
  bi-exponential A1 exp(-t/tau1) + A2 exp(-t/tau2) (tau1 <= tau2) and stretched exponential
  A exp(-(t/tau)^beta). A fit that does not converge is reported (ok: false, error), never raised.

A trace whose smoothed maximum is not clearly above the noise (a failed film) is reported with
detected = False, phi_sum_mu_max = 0 and the detection limit (an upper bound on it);
`analyze_to_measurement` turns it into a failed_sample Measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

from closedloop.drivers.base import Measurement

ANALYSIS_NAME = "trmc-transient"
ANALYSIS_VERSION = "1.0"
ELEMENTARY_CHARGE = 1.602176634e-19  # C
UNITS = {"phi_sum_mu_max": "cm^2/(V*s)", "tau_half": "ns"}
PEAK_REGION = 0.7  # the peak polynomial uses samples above this fraction of the smoothed maximum
DETECTION_SIGMAS = 6.0


@dataclass
class TransientAnalysis:
    phi_sum_mu_max: float  # cm^2/(V*s)
    tau_half_ns: float  # nan when the signal never falls to half within the record, or no signal
    t_peak_ns: float  # nan when not detected
    detected: bool  # False: no photoconductive signal above the noise
    baseline: float  # dPr/Pr
    noise: float  # sd of one point, dPr/Pr
    noise_phi_sum_mu: float  # the same in cm^2/(V*s)
    detection_limit: float  # cm^2/(V*s): a smaller peak is indistinguishable from noise
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)
    analysis: str = ANALYSIS_NAME
    analysis_version: str = ANALYSIS_VERSION


def analyze_transient(
    time_s: np.ndarray, dPr_over_Pr: np.ndarray, calibration: Mapping[str, float]
) -> TransientAnalysis:
    """Analyze one averaged TRMC record. Raises ValueError naming what is wrong with the input."""
    t, y_raw = _validated_trace(time_s, dPr_over_Pr)
    scale = _conversion_factor(calibration)
    pre = t <= 0.25 * t[0]
    baseline = float(np.mean(y_raw[pre]))
    noise = float(1.4826 * np.median(np.abs(y_raw[pre] - np.median(y_raw[pre]))))
    phi_sum_mu = -(y_raw - baseline) / scale
    noise_psm = noise / scale

    post = np.flatnonzero(t >= 0)
    smoothing = max(3, post.size // 200)
    smooth = _moving_average(phi_sum_mu[post], smoothing)
    peak, t_peak = _peak(t[post], phi_sum_mu[post], smooth)
    # Pure noise, smoothed, peaks near 3 sd of the smoothed trace; a signal must clear twice that.
    detection_limit = DETECTION_SIGMAS * noise_psm / math.sqrt(smoothing)
    detected = bool(smooth.max() > detection_limit)
    tau_half = math.nan
    fits: dict[str, dict[str, Any]] = {}
    if not detected:
        # The quartic would only fit the largest noise excursion; detection_limit bounds the peak.
        peak, t_peak = 0.0, math.nan
    else:
        tau_half = _half_time(t, phi_sum_mu, peak, t_peak)
        decay = t >= t_peak
        fits = _decay_fits(t[decay], phi_sum_mu[decay], noise_psm, peak, t_peak + tau_half, t[1] - t[0])
    return TransientAnalysis(
        phi_sum_mu_max=peak,
        tau_half_ns=tau_half * 1e9,
        t_peak_ns=t_peak * 1e9,
        detected=detected,
        baseline=baseline,
        noise=noise,
        noise_phi_sum_mu=noise_psm,
        detection_limit=detection_limit,
        fits=fits,
    )


def analyze_to_measurement(
    time_s: np.ndarray,
    dPr_over_Pr: np.ndarray,
    calibration: Mapping[str, float],
    *,
    instrument: str = "trmc",
    duration_s: float = 0.0,
) -> Measurement:
    """A Measurement of phi_sum_mu_max and tau_half; the record, calibration and fits as artifacts.

    A trace without a signal above the noise is a failed sample (the film, not the instrument, failed).
    """
    result = analyze_transient(time_s, dPr_over_Pr, calibration)
    summary = _json_safe({k: v for k, v in asdict(result).items() if k != "fits"})
    artifacts: dict[str, Any] = {
        "time_s": np.asarray(time_s, dtype=np.float64),
        "dPr_over_Pr": np.asarray(dPr_over_Pr, dtype=np.float64),
        "calibration": {k: float(v) for k, v in calibration.items()},
        "fits": _json_safe({"summary": summary, **result.fits}),
    }
    common: dict[str, Any] = {
        "artifacts": artifacts,
        "analysis": result.analysis,
        "analysis_version": result.analysis_version,
        "instrument": instrument,
        "duration_s": duration_s,
    }
    if not result.detected:
        return Measurement(
            status="failed_sample",
            detail="no photoconductive signal above the noise "
            f"(phi_sum_mu_max below the detection limit {result.detection_limit:.3g} cm^2/(V*s))",
            **common,
        )
    values = {"phi_sum_mu_max": result.phi_sum_mu_max}
    if math.isfinite(result.tau_half_ns):
        values["tau_half"] = result.tau_half_ns
    detail = "" if "tau_half" in values else "signal did not fall to half its peak within the record"
    return Measurement(values=values, units=dict(UNITS), detail=detail, **common)


def _validated_trace(time_s: np.ndarray, dPr_over_Pr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time_s, dtype=float)
    y = np.asarray(dPr_over_Pr, dtype=float)
    if t.ndim != 1 or y.shape != t.shape:
        raise ValueError(
            f"time_s and dPr_over_Pr must be 1-D arrays of equal length, got {t.shape} and {y.shape}"
        )
    if t.size < 50:
        raise ValueError(f"a TRMC record needs at least 50 points, got {t.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError(
            "time_s and dPr_over_Pr must be finite (no NaN/inf): check the oscilloscope transfer"
        )
    steps = np.diff(t)
    if not np.all(steps > 0) or np.ptp(steps) > 1e-6 * steps.mean():
        raise ValueError("time_s must be evenly spaced and increasing (one oscilloscope record)")
    if np.count_nonzero(t <= 0.25 * t[0]) < 10 or t[0] >= 0:
        raise ValueError(
            "the record needs a pre-trigger baseline (at least ~15 points before time zero): "
            "set the oscilloscope trigger position to ~10 % of the record"
        )
    return t, y


def _conversion_factor(calibration: Mapping[str, float]) -> float:
    """A * e * I0 * F_light: dPr/Pr per unit phi_sum_mu."""
    missing = [k for k in ("A", "I0", "F_light") if k not in calibration]
    if missing:
        raise ValueError(f"calibration lacks {missing}: it needs A (cm/S), I0 (photons/cm^2), F_light (1/cm)")
    bad = [k for k in ("A", "I0", "F_light") if not (math.isfinite(calibration[k]) and calibration[k] > 0)]
    if bad:
        raise ValueError(f"calibration values {bad} must be positive finite numbers, got {dict(calibration)}")
    return (
        float(calibration["A"]) * ELEMENTARY_CHARGE * float(calibration["I0"]) * float(calibration["F_light"])
    )


def _moving_average(y: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, y.size))
    return np.convolve(y, np.ones(width) / width, mode="same")


def _peak(t: np.ndarray, y: np.ndarray, smooth: np.ndarray) -> tuple[float, float]:
    """(peak value, its time) from a quartic over the top of the peak.

    A quartic follows the asymmetric top (cavity rise, slower decay) that biases a parabola low by ~1 %.
    """
    i = int(np.argmax(smooth))
    top = smooth >= PEAK_REGION * smooth[i]
    lo, hi = i, i
    while lo > 0 and top[lo - 1]:
        lo -= 1
    while hi < y.size - 1 and top[hi + 1]:
        hi += 1
    if hi - lo < 8 or smooth[i] <= 0:
        return float(smooth[i]), float(t[i])
    x = t[lo : hi + 1] - t[i]
    top_curve = np.polynomial.Polynomial.fit(x, y[lo : hi + 1], 4)
    grid = np.linspace(x[0], x[-1], 2001)
    k = int(np.argmax(top_curve(grid)))
    return float(top_curve(grid[k])), float(t[i] + grid[k])


def _half_time(t: np.ndarray, y: np.ndarray, peak: float, t_peak: float) -> float:
    """Seconds from the peak to the first fall below half of it; nan if it never does in the record."""
    after = np.flatnonzero(t > t_peak)
    elapsed = t[after] - t_peak
    # Average over +-10 % of the elapsed time: resolution shrinks where the decay is slow and the signal low.
    csum = np.concatenate(([0.0], np.cumsum(y[after])))
    lo = np.searchsorted(elapsed, 0.9 * elapsed, side="left")
    hi = np.maximum(np.searchsorted(elapsed, 1.1 * elapsed, side="right"), lo + 1)
    smooth = (csum[hi] - csum[lo]) / (hi - lo)
    below = np.flatnonzero(smooth < 0.5 * peak)
    if below.size == 0:
        return math.nan
    k = int(below[0])
    crossing = elapsed[k] if k == 0 else np.interp(0.5 * peak, smooth[[k, k - 1]], elapsed[[k, k - 1]])
    for _ in range(2):
        half_width = max(0.15 * crossing, 3.0 * (t[1] - t[0]))
        window = np.abs(elapsed - crossing) <= half_width
        if np.count_nonzero(window) < 4:
            break
        slope, intercept = np.polyfit(elapsed[window] - crossing, y[after][window], 1)
        if slope >= 0:
            break
        crossing = crossing + (0.5 * peak - intercept) / slope
    return float(crossing)


def _biexponential(t: np.ndarray, a1: float, tau1: float, a2: float, tau2: float) -> np.ndarray:
    return a1 * np.exp(-t / tau1) + a2 * np.exp(-t / tau2)


def _stretched(t: np.ndarray, a: float, tau: float, beta: float) -> np.ndarray:
    return a * np.exp(-((t / tau) ** beta))


def _decay_fits(
    t: np.ndarray, y: np.ndarray, noise: float, peak: float, t_half: float, dt: float
) -> dict[str, dict[str, Any]]:
    """Both decay models on (t, y), t from the excitation; `t_half` (when finite) seeds the time constants."""
    tau0 = t_half / math.log(2.0) if math.isfinite(t_half) and t_half > 0 else t[-1] / 5.0
    tau_max = 100.0 * t[-1]
    a_max = 100.0 * peak  # amplitudes extrapolate back to t = 0, above the (cavity-limited) peak
    fits = {
        "biexponential": _fit(
            _biexponential,
            ("A1", "tau1", "A2", "tau2"),
            t,
            y,
            noise,
            p0=(0.6 * peak, 0.5 * tau0, 0.4 * peak, 3.0 * tau0),
            bounds=((0.0, dt, 0.0, dt), (a_max, tau_max, a_max, tau_max)),
        ),
        "stretched_exponential": _fit(
            _stretched,
            ("A", "tau", "beta"),
            t,
            y,
            noise,
            p0=(peak, tau0, 0.7),
            bounds=((0.0, dt, 0.05), (a_max, tau_max, 1.0)),
        ),
    }
    bi = fits["biexponential"]
    if bi["ok"] and bi["params"]["tau1"] > bi["params"]["tau2"]:
        # Report the fast component first whatever order the optimizer settled in.
        for key in ("params", "stderr"):
            d = bi[key]
            d["A1"], d["tau1"], d["A2"], d["tau2"] = d["A2"], d["tau2"], d["A1"], d["tau1"]
    return fits


def _fit(
    model: Callable[..., np.ndarray],
    names: tuple[str, ...],
    t: np.ndarray,
    y: np.ndarray,
    noise: float,
    p0: tuple[float, ...],
    bounds: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict[str, Any]:
    lower, upper = np.array(bounds[0]), np.array(bounds[1])
    start = np.clip(np.array(p0), lower + 1e-12 * (upper - lower), upper - 1e-12 * (upper - lower))
    sigma = np.full(t.size, max(noise, 1e-300))
    try:
        params, cov = curve_fit(model, t, y, p0=start, sigma=sigma, bounds=(lower, upper), maxfev=5000)
    except (RuntimeError, ValueError) as exc:
        return {"ok": False, "error": str(exc), "params": {}, "stderr": {}}
    residual = y - model(t, *params)
    with np.errstate(invalid="ignore"):
        stderr = np.sqrt(np.diag(cov))
    return {
        "ok": True,
        "error": "",
        "params": dict(zip(names, map(float, params), strict=True)),
        "stderr": dict(zip(names, map(float, stderr), strict=True)),
        "rms_residual": float(np.sqrt(np.mean(residual**2))),
        "chi2_reduced": float(np.sum((residual / sigma) ** 2) / max(1, t.size - len(names))),
        "time_origin": "excitation",
        "units": {"A": "cm^2/(V*s)", "tau": "s"},
    }


def _json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars to float, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | float | np.floating | np.integer):
        f = float(value)
        return f if math.isfinite(f) else None
    return str(value)
