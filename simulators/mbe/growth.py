"""What grows: a model of SrRuO3 films by ozone-assisted MBE, from the fluxes and conditions that
actually reached the substrate to RRR, XRD rocking-curve FWHM, growth rate and the RHEED trace.

The model (assumed, shaped after the adsorption-controlled growth of SrRuO3 reported by Wakabayashi
et al., APL Mater. 7, 101114 (2019) and npj Comput. Mater. 8, 180 (2022)):

- Stoichiometry is set by the Ru/Sr atomic flux ratio r. Excess Ru leaves as volatile RuO4, more so on a
  hotter substrate and in more ozone, so the supply ratio that gives a stoichiometric film rises with
  both: ln r_stoich = ln_r_stoich0 + stoich_per_100k * (T - 700)/100 + stoich_per_ln_ozone * ln(O3 / 4).
  Writing d = ln r - ln r_stoich: d < ru_poor_fail -> Sr-rich Ruddlesden-Popper phases; d above the
  adsorption-controlled window (which opens with temperature and ozone) -> RuO2 / Ru inclusions.
- Too cold a substrate gives no epitaxy, too hot a substrate in too little ozone decomposes the film, too
  little ozone for the temperature leaves Ru metal and SrO. Each of these is a wrong phase: no RRR.
- Inside the window RRR = 1 + (rrr_max - 1) * f_stoich * f_temp * f_ozone, each factor <= 1, peaking at a
  slightly Ru-rich supply, at an intermediate substrate temperature and in ample ozone.
- Growth is Sr-limited (the perovskite takes one Ru per Sr and rejects the rest), Ru-limited when Ru-poor.
- RHEED: I(t) = I_bg + A exp(-t/tau_damp) cos(2 pi N(t)), N(t) the monolayers grown; oscillations damp
  slowly (layer-by-layer) only when the film is near stoichiometric at a good temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MONOLAYER_ANGSTROM = 3.93  # pseudocubic SrRuO3 lattice parameter: one RHEED oscillation per unit cell
SITES_PER_CM2 = 1.0 / (MONOLAYER_ANGSTROM * 1e-8) ** 2  # Sr (and Ru) atoms per cm^2 in one monolayer


@dataclass(frozen=True)
class SrRuO3Window:
    """The constants of the growth model; the defaults give RRR ~80 at the best conditions."""

    rrr_max: float = 80.0
    ln_r_stoich0: float = 0.05
    stoich_per_100k: float = 0.25
    stoich_per_ln_ozone: float = 0.15
    ln_r_best: float = 0.10  # best supply sits slightly Ru-rich of stoichiometric
    width_ru_poor: float = 0.13  # RRR falls fast with Ru vacancies ...
    width_ru_rich: float = 0.27  # ... and slowly with excess Ru inside the adsorption window
    ru_poor_fail: float = -0.50
    window_closed: float = 0.30  # Ru excess tolerated before adsorption control sets in
    window_open: float = 0.55  # extra Ru excess tolerated on a hot substrate in ample ozone
    window_t50_c: float = 650.0
    window_t_width_k: float = 35.0
    window_ozone_sccm: float = 2.0
    t_best_c: float = 760.0
    t_width_k: float = 70.0
    t_cold_c: float = 560.0
    t_hot_at_1sccm_c: float = 770.0
    t_hot_per_ln_ozone: float = 40.0
    ozone_min_sccm: float = 0.4  # at 600 degC, e-folding with temperature:
    ozone_min_e_fold_k: float = 200.0
    ozone_saturation_sccm: float = 2.5
    ozone_excess_sccm: float = 25.0  # dense ozone scatters the beams and roughens the surface
    fwhm_best_deg: float = 0.018
    fwhm_span_deg: float = 0.25

    @property
    def best_ozone_sccm(self) -> float:
        """Where oxidation is complete but the ozone does not yet scatter the beams (peak of f_ozone)."""
        return self.ozone_saturation_sccm * math.log1p(self.ozone_excess_sccm / self.ozone_saturation_sccm)


@dataclass(frozen=True)
class GrowthOutcome:
    """The film one set of true conditions produces, before any measurement scatter.

    `phase` is "SrRuO3" or the reason the wanted phase did not form ("wrong phase: ...");
    `rrr` and `xrd_fwhm_deg` are None then. `quality` in [0, 1] drives the RHEED damping.
    """

    phase: str
    growth_rate_a_per_s: float
    rrr: float | None
    xrd_fwhm_deg: float | None
    quality: float
    ln_r_excess: float

    @property
    def ok(self) -> bool:
        return self.rrr is not None


def _smooth_step(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def wrong_phase(
    window: SrRuO3Window, ln_r_excess: float, substrate_c: float, ozone_sccm: float
) -> str | None:
    """The reason the wanted phase does not form, or None. Deterministic: sharp phase boundaries."""
    w = window
    if substrate_c < w.t_cold_c:
        return f"wrong phase: substrate too cold ({substrate_c:.0f} degC < {w.t_cold_c:.0f}): no epitaxy, amorphous film"
    ozone_min = w.ozone_min_sccm * math.exp((substrate_c - 600.0) / w.ozone_min_e_fold_k)
    if ozone_sccm < ozone_min:
        return f"wrong phase: under-oxidised ({ozone_sccm:.2f} sccm ozone < {ozone_min:.2f} needed): Ru metal + SrO"
    t_hot = w.t_hot_at_1sccm_c + w.t_hot_per_ln_ozone * math.log(ozone_sccm)
    if substrate_c > t_hot:
        return f"wrong phase: substrate too hot for the ozone ({substrate_c:.0f} degC > {t_hot:.0f}): film decomposes"
    if ln_r_excess < w.ru_poor_fail:
        return f"wrong phase: Ru-poor (Ru/Sr {math.exp(ln_r_excess):.2f} of stoichiometric): Ruddlesden-Popper Sr2RuO4"
    limit = adsorption_window(window, substrate_c, ozone_sccm)
    if ln_r_excess > limit:
        return f"wrong phase: Ru-rich (Ru/Sr {math.exp(ln_r_excess):.2f} of stoichiometric > {math.exp(limit):.2f}): RuO2 inclusions"
    return None


def adsorption_window(window: SrRuO3Window, substrate_c: float, ozone_sccm: float) -> float:
    """Largest ln(Ru excess) that RuO4 desorption still removes: opens on a hot substrate in ozone."""
    w = window
    opening = _smooth_step((substrate_c - w.window_t50_c) / w.window_t_width_k)
    oxidation = 1.0 - math.exp(-ozone_sccm / w.window_ozone_sccm)
    return w.window_closed + w.window_open * opening * oxidation


def stoichiometric_ln_ratio(window: SrRuO3Window, substrate_c: float, ozone_sccm: float) -> float:
    w = window
    return (
        w.ln_r_stoich0
        + w.stoich_per_100k * (substrate_c - 700.0) / 100.0
        + w.stoich_per_ln_ozone * math.log(ozone_sccm / 4.0)
    )


def _peak(x: float) -> float:
    # Lorentzian rather than Gaussian: films well off the optimum still conduct, just with more disorder.
    return 1.0 / (1.0 + x * x)


def _ozone_factor(window: SrRuO3Window, ozone_sccm: float) -> float:
    saturation = 1.0 - math.exp(-ozone_sccm / window.ozone_saturation_sccm)
    return saturation * math.exp(-ozone_sccm / window.ozone_excess_sccm)


def grow(
    window: SrRuO3Window, sr_atom_flux: float, ru_atom_flux: float, substrate_c: float, ozone_sccm: float
) -> GrowthOutcome:
    """The film grown from these true fluxes (atoms/cm^2/s) and conditions."""
    w = window
    if sr_atom_flux <= 0 or ru_atom_flux <= 0:
        raise ValueError(f"fluxes must be > 0 atoms/cm^2/s, got Sr {sr_atom_flux!r}, Ru {ru_atom_flux!r}")
    ozone = max(ozone_sccm, 1e-6)  # no ozone at all is simply the most under-oxidised case
    excess = math.log(ru_atom_flux / sr_atom_flux) - stoichiometric_ln_ratio(w, substrate_c, ozone)
    ru_limited = min(1.0, math.exp(excess))
    rate = MONOLAYER_ANGSTROM * sr_atom_flux / SITES_PER_CM2 * math.sqrt(ru_limited)

    width = w.width_ru_poor if excess < w.ln_r_best else w.width_ru_rich
    f_stoich = _peak((excess - w.ln_r_best) / width)
    f_temp = _peak((substrate_c - w.t_best_c) / w.t_width_k)
    f_ozone = _ozone_factor(w, ozone) / _ozone_factor(w, w.best_ozone_sccm)
    crystalline = f_stoich * f_temp

    failure = wrong_phase(w, excess, substrate_c, ozone)
    if failure is not None:
        return GrowthOutcome(failure, rate, None, None, 0.0, excess)
    rrr = 1.0 + (w.rrr_max - 1.0) * crystalline * f_ozone
    fwhm = w.fwhm_best_deg + w.fwhm_span_deg * (1.0 - crystalline) ** 1.5
    return GrowthOutcome("SrRuO3", rate, rrr, fwhm, crystalline, excess)


@dataclass(frozen=True)
class MeasurementScatter:
    """Sample-to-sample and instrument scatter of the ex-situ measurements (relative, 1 sigma)."""

    rrr: float = 0.03
    xrd_fwhm: float = 0.05
    thickness: float = 0.01


def measure(
    outcome: GrowthOutcome, rng: np.random.Generator, scatter: MeasurementScatter
) -> dict[str, float]:
    """Ex-situ results of one film: growth rate from its thickness, and RRR and FWHM if it is SrRuO3."""
    noise = [float(z) for z in rng.standard_normal(3)]
    values = {"growth_rate": outcome.growth_rate_a_per_s * (1.0 + scatter.thickness * noise[0])}
    if outcome.rrr is not None and outcome.xrd_fwhm_deg is not None:
        values["rrr"] = max(1.0, outcome.rrr * (1.0 + scatter.rrr * noise[1]))
        values["xrd_fwhm"] = outcome.xrd_fwhm_deg * math.exp(scatter.xrd_fwhm * noise[2])
    return values


@dataclass(frozen=True)
class RheedSettings:
    """The RHEED camera: sampling and how much of the growth it records (the start, where the
    oscillations calibrate the rate), and the intensity scale in arbitrary units."""

    sample_hz: float = 5.0
    record_s: float = 600.0
    background: float = 0.35
    amplitude: float = 0.5
    relative_noise: float = 0.02
    tau_poor_s: float = 25.0
    tau_good_s: float = 900.0


def rheed_damping_s(outcome: GrowthOutcome, settings: RheedSettings) -> float:
    """Decay time of the oscillations: long in layer-by-layer growth, short when the surface roughens."""
    return settings.tau_poor_s + (settings.tau_good_s - settings.tau_poor_s) * outcome.quality**2


def rheed_trace(
    outcome: GrowthOutcome,
    monolayers_grown: np.ndarray,
    times_s: np.ndarray,
    settings: RheedSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """Specular intensity at `times_s` after the shutters opened, given the monolayers grown by then."""
    amplitude = settings.amplitude if outcome.ok else 0.1 * settings.amplitude
    damped = amplitude * np.exp(-times_s / rheed_damping_s(outcome, settings))
    clean = settings.background + damped * np.cos(2.0 * np.pi * monolayers_grown)
    noise = settings.relative_noise * settings.amplitude * rng.standard_normal(times_s.shape)
    return clean + noise
