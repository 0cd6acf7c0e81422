"""TRMC transient physics: excitation pulse -> carrier kinetics -> cavity response -> noisy dPr/Pr.

Units are those of the TRMC literature: time in s (reported in ns), lengths in cm, carrier density n
in cm^-3, fluence I0 in photons/cm^2 per pulse, k1 in 1/s, k2 in cm^3/s, mobilities in cm^2/(V*s),
conductivity in S/cm.

Generation: a film of thickness L absorbs the fraction 1 - 10^-OD of the incident photons, spread over
L, so one pulse generates n_gen = phi * I0 * F_light carriers per cm^3 with F_light = (1 - 10^-OD)/L
(1/cm, the literature's F_light). Kinetics: dn/dt = phi*G(t) - k1*n - k2*n^2, with G(t) = I0*F_light*p(t)
and p(t) the pulse shape (unit area). Within one sample interval the generation is taken as constant and
the Riccati equation is solved exactly, so the scheme is stable for any step and conserves photons.

Detection: the cavity sees the sheet conductance dG = dsigma * L (S) through a sheet sensitivity
A_sheet (1/S): dPr/Pr = -A_sheet * dG, filtered by the cavity response h(t) = exp(-t/tau_cav)/tau_cav,
tau_cav = Q / (2 pi f0). The literature writes dPr/Pr = -A * dsigma with the volume conductivity, so a
calibration reports A = A_sheet * L (cm/S) for the film in the cavity; then
phi_sum_mu(t) = dsigma/(e I0 F_light) = -(dPr/Pr) / (A e I0 F_light) needs only (A, I0, F_light).
A_sheet = 5e4 /S gives dPr/Pr ~ 5e-3 for phi_sum_mu = 1e-4 at 9e15 photons/cm^2 and ~70 % absorption.

Time zero is the peak of a laser pulse (Gaussian) or the onset of a Xe flash; 10 % of each record is
pre-trigger baseline.

Ground truth (`TransientTruth`): the noise-free, cavity-convolved phi_sum_mu(t) of this film at the
nominal fluence. phi_sum_mu_max is its peak; tau_half is the time from that peak until the signal first
falls to half of it. Both include the cavity response, as the observable does, so an analysis of the
noisy trace should recover them.

Noise (`Acquisition`): white noise of `shot_noise / sqrt(averages)` per point (2e-4 per shot gives
2.5e-5 at 64 averages), shot-to-shot fluence jitter (the averaged trace is the response at the mean
fluence of the shots; exact in the linear regime), and a baseline offset supplied by the caller (slow
drift between measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtr

ELEMENTARY_CHARGE = 1.602176634e-19  # C
PRE_TRIGGER_FRACTION = 0.1
_STEPS_1_2_5 = tuple(m * 10.0**e for e in range(-10, -5) for m in (1.0, 2.0, 5.0))


@dataclass(frozen=True)
class Film:
    """One film as the cavity sees it. `phi` = 0 is a film without photoconductivity (failed)."""

    phi: float  # free-carrier yield per absorbed photon
    sum_mu: float  # sum of electron and hole mobilities, cm^2/(V*s)
    k1: float  # first-order (trap) decay rate, 1/s
    k2: float  # second-order (bimolecular) rate constant, cm^3/s
    od: float  # optical density at the excitation wavelength
    thickness_cm: float

    def __post_init__(self) -> None:
        for name in ("k1", "od", "thickness_cm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Film.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("phi", "sum_mu", "k2"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Film.{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def absorbed_fraction(self) -> float:
        return 1.0 - 10.0 ** (-self.od)

    @property
    def f_light(self) -> float:
        """Absorbed photons per incident photon per cm of film (1/cm)."""
        return self.absorbed_fraction / self.thickness_cm


@dataclass(frozen=True)
class Excitation:
    """The light pulse: a laser (Gaussian, FWHM 5-8 ns) or a white Xe flash (~10 us)."""

    fluence: float  # I0, photons/cm^2 per pulse
    wavelength_nm: float = 500.0
    kind: Literal["laser", "flash"] = "laser"
    fwhm_s: float = 6e-9

    def __post_init__(self) -> None:
        if self.kind not in ("laser", "flash"):
            raise ValueError(f"Excitation.kind must be 'laser' or 'flash', got {self.kind!r}")
        if not (self.fluence > 0 and self.fwhm_s > 0):
            raise ValueError(
                f"Excitation needs fluence > 0 and fwhm_s > 0, got {self.fluence!r}, {self.fwhm_s!r}"
            )

    def interval_weights(self, time_s: np.ndarray) -> np.ndarray:
        """Fraction of the pulse's photons arriving in each interval (t[i-1], t[i]]; sums to 1."""
        edges = np.concatenate(([time_s[0] - (time_s[1] - time_s[0])], time_s))
        if self.kind == "laser":
            cdf = ndtr(edges / (self.fwhm_s / (2.0 * math.sqrt(2.0 * math.log(2.0)))))
        else:
            # t*exp(-t/theta): a fast rise and a slow tail; its FWHM is 2.446 theta.
            x = np.clip(edges, 0.0, None) / (self.fwhm_s / 2.446)
            cdf = 1.0 - np.exp(-x) * (1.0 + x)
        weights = np.diff(cdf)
        return weights / weights.sum()


@dataclass(frozen=True)
class Cavity:
    """X-band resonant cavity as tuned for one sample."""

    f0_hz: float = 9.1e9
    q: float = 2500.0
    sheet_sensitivity: float = 5.0e4  # A_sheet: dPr/Pr per siemens of sheet conductance

    @property
    def tau_cav_s(self) -> float:
        return self.q / (2.0 * math.pi * self.f0_hz)

    def sensitivity(self, film: Film) -> float:
        """The literature's A (cm/S) for this film: dPr/Pr = -A * dsigma."""
        return self.sheet_sensitivity * film.thickness_cm


@dataclass(frozen=True)
class Acquisition:
    """Oscilloscope averaging and the noise sources of one measurement."""

    averages: int = 64
    shot_noise: float = 2e-4  # dPr/Pr per point of a single shot
    fluence_jitter: float = 0.035  # relative shot-to-shot sd of the pulse energy
    baseline_offset: float = 0.0  # slow drift of the detector baseline, dPr/Pr

    def __post_init__(self) -> None:
        if int(self.averages) != self.averages or self.averages < 1:
            raise ValueError(f"Acquisition.averages must be a positive integer, got {self.averages!r}")

    @property
    def noise_per_point(self) -> float:
        return self.shot_noise / math.sqrt(self.averages)


@dataclass(frozen=True)
class Timebase:
    """The oscilloscope record: `n_points` samples `dt_s` apart, 10 % of them before time zero."""

    dt_s: float
    n_points: int = 4000

    def times(self) -> np.ndarray:
        n_pre = round(PRE_TRIGGER_FRACTION * self.n_points)
        return (np.arange(self.n_points) - n_pre) * self.dt_s


@dataclass(frozen=True)
class TransientTruth:
    phi_sum_mu_max: float  # cm^2/(V*s)
    tau_half_ns: float  # from the peak to half the peak; nan if no signal or not within the record
    t_peak_ns: float


@dataclass
class SimulatedTransient:
    time_s: np.ndarray
    dPr_over_Pr: np.ndarray  # what the oscilloscope returns (negative for photoconductivity)
    clean_dPr_over_Pr: np.ndarray  # noise-free, nominal fluence, no offset
    truth: TransientTruth
    calibration: dict[str, float] = field(default_factory=dict)


def generated_density(film: Film, excitation: Excitation) -> float:
    """n_gen = phi * I0 * F_light: carriers per cm^3 one pulse creates if none decayed."""
    return film.phi * excitation.fluence * film.f_light


def decay_time_estimate(film: Film, excitation: Excitation) -> float:
    """A rough decay time (s) combining first-order ln2/k1 and second-order 1/(k2 n_gen) half-lives."""
    return 1.0 / (film.k1 / math.log(2.0) + film.k2 * generated_density(film, excitation))


def choose_timebase(film: Film, excitation: Excitation, cavity: Cavity, n_points: int = 4000) -> Timebase:
    """A 1-2-5 sample interval whose post-trigger window covers ~10 decay times, as an operator would set."""
    window = 10.0 * (decay_time_estimate(film, excitation) + cavity.tau_cav_s)
    if excitation.kind == "flash":
        window += 6.0 * excitation.fwhm_s
    needed = window / ((1.0 - PRE_TRIGGER_FRACTION) * n_points)
    dt = next((s for s in _STEPS_1_2_5 if s >= needed), _STEPS_1_2_5[-1])
    return Timebase(dt_s=dt, n_points=n_points)


def carrier_fraction(
    time_s: np.ndarray, weights: np.ndarray, k1: float | np.ndarray, kappa: float | np.ndarray
) -> np.ndarray:
    """u(t) = n(t)/n_gen for each row of (k1, kappa = k2 * n_gen), shape (rows, len(time_s)).

    du/dt = w(t)/dt - k1 u - kappa u^2, generation constant within each interval. With u+ the steady
    state of that interval and x = u - u+, dx/dt = -D x - kappa x^2 (D = sqrt(k1^2 + 4 kappa g)), a
    Bernoulli equation with the exact step x1 = x0 e^{-D dt} / (1 + kappa x0 (1 - e^{-D dt}) / D).
    """
    k1 = np.atleast_1d(np.asarray(k1, dtype=float))[:, None]
    kappa = np.atleast_1d(np.asarray(kappa, dtype=float))[:, None]
    u = np.zeros((max(k1.shape[0], kappa.shape[0]), time_s.size))
    support = np.flatnonzero(weights > 1e-12 * weights.max())
    first, last = int(support[0]), int(support[-1])
    steps = np.arange(first, last + 1)
    dt = np.diff(time_s, prepend=2.0 * time_s[0] - time_s[1])[steps]
    g = weights[steps] / dt
    # Everything but the state is known in advance: only the recursion itself stays in the loop.
    d = np.sqrt(k1**2 + 4.0 * kappa * g)
    u_plus = 2.0 * g / (k1 + d)
    decay = np.exp(-d * dt)
    damping = kappa * (-np.expm1(-d * dt)) / d
    u_plus, decay, damping = np.broadcast_arrays(u_plus, decay, damping)
    state = np.zeros(u.shape[0])
    for j, i in enumerate(steps):
        x0 = state - u_plus[:, j]
        state = u_plus[:, j] + x0 * decay[:, j] / (1.0 + damping[:, j] * x0)
        u[:, i] = state
    state = state[:, None]
    tail = time_s[last + 1 :] - time_s[last]
    if tail.size:
        decay = np.exp(-k1 * tail)
        u[:, last + 1 :] = state * decay / (1.0 + kappa * state * (-np.expm1(-k1 * tail)) / k1)
    return u


def cavity_filter(signal: np.ndarray, dt_s: float, tau_cav_s: float) -> np.ndarray:
    """Convolve with h(t) = exp(-t/tau)/tau along the last axis (exact for a piecewise-constant input)."""
    a = math.exp(-dt_s / tau_cav_s)
    return lfilter([1.0 - a], [1.0, -a], signal, axis=-1)


def transient_figures(
    time_s: np.ndarray, phi_sum_mu: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peak, t_peak, tau_half), each in s or cm^2/(V*s), for every row of a noise-free phi_sum_mu(t).

    The peak is refined by a parabola through the three highest samples; tau_half interpolates linearly
    between the samples around the first half-peak crossing after the peak (nan if there is none).
    """
    rows = np.atleast_2d(phi_sum_mu)
    dt = time_s[1] - time_s[0]
    idx = np.argmax(rows, axis=1)
    r = np.arange(rows.shape[0])
    inner = np.clip(idx, 1, time_s.size - 2)
    ym, y0, yp = rows[r, inner - 1], rows[r, inner], rows[r, inner + 1]
    curvature = ym - 2.0 * y0 + yp
    safe = np.where(curvature < 0, curvature, -1.0)
    shift = np.where((curvature < 0) & (idx == inner), 0.5 * (ym - yp) / safe, 0.0)
    peak = np.where(shift != 0, y0 - 0.25 * (ym - yp) * shift, rows[r, idx])
    t_peak = time_s[idx] + shift * dt
    after = np.arange(time_s.size)[None, :] > idx[:, None]
    below = after & (rows < 0.5 * peak[:, None])
    found = below.any(axis=1) & (peak > 0)
    j = np.where(found, np.argmax(below, axis=1), 1)
    y_hi, y_lo = rows[r, j - 1], rows[r, j]
    frac = (y_hi - 0.5 * peak) / np.where(y_hi > y_lo, y_hi - y_lo, 1.0)
    t_half = time_s[j - 1] + frac * dt
    tau_half = np.where(found, t_half - t_peak, np.nan)
    return peak, t_peak, tau_half


def noise_free_phi_sum_mu(
    time_s: np.ndarray, film: Film, excitation: Excitation, cavity: Cavity
) -> np.ndarray:
    """The cavity-convolved phi_sum_mu(t) of `film` at the excitation's fluence (no noise)."""
    kappa = film.k2 * generated_density(film, excitation)
    u = carrier_fraction(time_s, excitation.interval_weights(time_s), film.k1, kappa)[0]
    return film.phi * film.sum_mu * cavity_filter(u, time_s[1] - time_s[0], cavity.tau_cav_s)


def truth_of(time_s: np.ndarray, clean_phi_sum_mu: np.ndarray) -> TransientTruth:
    peak, t_peak, tau_half = transient_figures(time_s, clean_phi_sum_mu)
    if not peak[0] > 0:
        return TransientTruth(0.0, math.nan, math.nan)
    return TransientTruth(float(peak[0]), float(tau_half[0]) * 1e9, float(t_peak[0]) * 1e9)


def simulate_transient(
    film: Film,
    excitation: Excitation,
    cavity: Cavity,
    acquisition: Acquisition,
    rng: np.random.Generator,
    timebase: Timebase | None = None,
    calibration_film: Film | None = None,
) -> SimulatedTransient:
    """One averaged oscilloscope record of `film`, plus the ground truth.

    `calibration_film` is the film the station believes it measures (thickness, OD) when that differs
    from the real one, e.g. a dewetted film; the calibration is computed from it.
    """
    reference = calibration_film or film
    timebase = timebase or choose_timebase(reference, excitation, cavity)
    time_s = timebase.times()
    clean = noise_free_phi_sum_mu(time_s, film, excitation, cavity)
    truth = truth_of(time_s, clean)
    if film.phi * film.sum_mu > 0 and math.isnan(truth.tau_half_ns):
        # Window too short for this film: widen it as an operator would after a first look.
        longer = Timebase(dt_s=timebase.dt_s * 5.0, n_points=timebase.n_points)
        return simulate_transient(film, excitation, cavity, acquisition, rng, longer, calibration_film)
    scale = cavity.sensitivity(reference) * ELEMENTARY_CHARGE * excitation.fluence * reference.f_light
    mean_jitter = acquisition.fluence_jitter * float(rng.standard_normal()) / math.sqrt(acquisition.averages)
    jittered = replace(excitation, fluence=excitation.fluence * (1.0 + mean_jitter))
    signal = noise_free_phi_sum_mu(time_s, film, jittered, cavity) * (1.0 + mean_jitter)
    noise = rng.normal(0.0, acquisition.noise_per_point, time_s.size)
    measured = -scale * signal + noise + acquisition.baseline_offset
    calibration = {
        "A": cavity.sensitivity(reference),
        "I0": excitation.fluence,
        "F_light": reference.f_light,
        "f0": cavity.f0_hz,
        "Q": cavity.q,
        "tau_cav": cavity.tau_cav_s,
        "averages": float(acquisition.averages),
        "wavelength": excitation.wavelength_nm,
        "fluence": excitation.fluence,
        "od": reference.od,
        "thickness_cm": reference.thickness_cm,
    }
    return SimulatedTransient(time_s, measured, -scale * clean, truth, calibration)
