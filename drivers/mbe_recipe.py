"""What the MBE driver works with besides the wire: its options, the steps of a growth recipe, the
result of flux tuning, and the growth rate read off a RHEED oscillation. Kept apart from `mbe_driver`
so the driver module holds only the protocol and its safety rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.drivers.base import EnvelopeViolation
from closedloop.drivers.mbe import MBE_ENVELOPE

BOLTZMANN_EV_PER_K = 8.617333262e-5
SRRUO3_MONOLAYER_ANGSTROM = 3.93  # one RHEED oscillation per pseudocubic unit cell
HEATERS: dict[str, str] = {"sr_cell_temp": "SR_CELL", "ru_cell_temp": "RU_CELL", "substrate_temp": "SUBSTRATE"}
CELLS: dict[str, str] = {"sr": "sr_cell_temp", "ru": "ru_cell_temp"}
SHUTTERS = ("SR", "RU", "MAIN")
REQUIRED = ("sr_cell_temp", "ru_cell_temp", "substrate_temp", "ozone_flow")
ANALYSIS, ANALYSIS_VERSION = "mbe-ex-situ+rheed-fft", "1"


@dataclass(frozen=True)
class MbeOptions:
    """How the driver runs a growth; every field can be given in the protocol's `instrument.options`.

    `ramp_rate`: degC/min per heater (default: the envelope's max_rate); `activation_ev`: each cell's
    Arrhenius activation energy, the slope flux tuning steps along; `heat_gas_limit_torr`: highest
    chamber pressure at which heating or opening gas is allowed.
    """

    connection: str = "sim://mbe"
    ramp_rate: Mapping[str, float] = field(
        default_factory=lambda: {h: float(MBE_ENVELOPE.limits[h].max_rate or 1.0) for h in HEATERS}
    )
    idle: Mapping[str, float] = field(
        default_factory=lambda: {"sr_cell_temp": 300.0, "ru_cell_temp": 1200.0, "substrate_temp": 200.0}
    )
    activation_ev: Mapping[str, float] = field(default_factory=lambda: {"sr": 1.7, "ru": 6.0})
    stable_within_k: float = 1.0
    poll_s: float = 15.0
    stabilize_timeout_s: float = 6 * 3600.0
    soak_s: float = 300.0
    gauge_settle_s: float = 60.0
    gauge_readings: int = 16
    ozone_settle_s: float = 120.0
    heat_gas_limit_torr: float = 5e-7
    rheed_s: float = 600.0
    ex_situ_s: float = 3 * 3600.0
    timeout_s: float = 2.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> MbeOptions:
        """Options from a protocol mapping; unknown names and unsafe ramp rates are a `ValueError`."""
        given = dict(options or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"unknown MBE driver option(s) {unknown}; known: {', '.join(sorted(known))}")
        if "ramp_rate" in given:
            given["ramp_rate"] = {**cls().ramp_rate, **given["ramp_rate"]}
        made = cls(**given)
        for heater, rate in made.ramp_rate.items():
            try:
                check_ramp_rate(heater, float(rate))
            except EnvelopeViolation as e:
                raise ValueError(f"instrument.options.ramp_rate: {e}; give at most the envelope's max_rate") from None
        return made


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


def check_ramp_rate(heater: str, rate: float) -> None:
    limit = MBE_ENVELOPE.limits[heater].max_rate or math.inf
    if not (math.isfinite(rate) and 0 < rate <= limit):
        raise EnvelopeViolation(f"{heater} ramp rate", rate, f"must be > 0 and at most max_rate {limit} degC/min")


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
