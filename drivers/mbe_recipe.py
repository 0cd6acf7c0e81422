"""What the MBE driver works with besides the wire: the steps of a growth recipe, the
result of flux tuning, and the growth rate read off a RHEED oscillation. Kept apart from `mbe_driver`
so the driver module holds only the protocol and its safety rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOLTZMANN_EV_PER_K = 8.617333262e-5
SRRUO3_MONOLAYER_ANGSTROM = 3.93  # one RHEED oscillation per pseudocubic unit cell
CELLS: dict[str, str] = {"sr": "sr_cell_temp", "ru": "ru_cell_temp"}
SHUTTERS = ("SR", "RU", "MAIN")
REQUIRED = ("sr_cell_temp", "ru_cell_temp", "substrate_temp", "ozone_flow")
ANALYSIS, ANALYSIS_VERSION = "mbe-ex-situ+rheed-fft", "1"


@dataclass(frozen=True)
class Layer:
    """One step of a growth recipe: these shutters open (the rest closed) for `duration_s`."""

    open_shutters: frozenset[str]
    duration_s: float


@dataclass(frozen=True)
class FluxTuning:
    """Result of `tune_flux`: the cell temperature reached, its BEP, and (temperature, BEP) per iteration."""

    temperature: float
    bep: float
    iterations: int
    steps: tuple[tuple[float, float], ...]


def growth_rate_from_rheed(times_s: np.ndarray, intensity: np.ndarray) -> float:
    """Growth rate (angstrom/s) from the RHEED specular oscillation: one period per monolayer.

    The dominant frequency of the detrended, windowed trace (zero-padded FFT, refined by a parabola
    through the peak bin). NaN when the trace is too short or has no oscillation above its noise.
    """
    if len(times_s) < 16:
        return math.nan
    dt = float(np.median(np.diff(times_s)))
    centered = intensity - np.polyval(np.polyfit(times_s, intensity, 2), times_s)
    if float(np.std(centered)) <= 1e-9 * max(1.0, float(np.abs(intensity).max())):
        return math.nan  # a flat trace: only rounding left after the trend
    n = 8 * len(centered)
    spectrum = np.abs(np.fft.rfft(centered * np.hanning(len(centered)), n))
    freqs = np.fft.rfftfreq(n, dt)
    lowest = 8 * 2  # skip what is left of the trend: fewer than two periods per trace
    k = lowest + int(np.argmax(spectrum[lowest:-1]))
    # White noise peaks at ~10x its median power over a trace this long; a real oscillation far above.
    if not spectrum[k] ** 2 > 50.0 * float(np.median(spectrum[lowest:] ** 2)):
        return math.nan
    a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return float((freqs[k] + shift * (freqs[1] - freqs[0])) * SRRUO3_MONOLAYER_ANGSTROM)
