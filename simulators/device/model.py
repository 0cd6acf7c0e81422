"""A P3HT:PCBM solar cell made from the same film as the TRMC station measures: process conditions ->
film (simulators/trmc/process.py) -> device -> single-diode J-V -> PCE.

The film's yield x mobility (TRMC's phi_sum_mu_max) drives the cell's photocurrent and fill factor; a
hidden smooth landscape (simulators/device/landscape.py: contacts, interlayers) drives them too. Both
are standardized over a fixed Sobol sample of the example protocol's space and mixed into one latent
quality z = cos(angle) * film + sin(angle) * hidden, with the hidden part made uncorrelated with the film
over that sample. Every cell parameter is monotone in z, so PCE is too, and the rank correlation of
TRMC's signal with PCE is that of the film with z: `angle` is found by bisection so that it equals
`DeviceSettings.proxy_correlation` on the sample (once per settings, cached).

Cell parameters from u = Phi(z) in (0, 1) (literature-typical P3HT:PCBM, DOMAIN.md):
Jph = 2.5 + 8.5 u mA/cm^2, J0 = 2e-8 exp(-2.5 u) A/cm^2, n = 1.6 - 0.1 u, Rs = 12 - 9 u ohm*cm^2,
Rsh = 200 + 1300 u ohm*cm^2. Typical: Voc 0.53-0.62 V, Jsc 2.5-11 mA/cm^2, FF 0.5-0.7, PCE ~1 % at poor
recipes, ~2.4 % at the median point, ~4.8 % at the best. A device made from a failed film has no
photocurrent; on top of that a device fails (a pinhole short or a lost contact) with `failure_rate`.
Device-to-device scatter: lognormal, sd 6 % on Jph, 15 % on Rs, 30 % on Rsh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr
from scipy.stats import qmc, spearmanr

from closedloop.drivers.base import Value
from closedloop.simulators.device.diode import DiodeParameters, max_power_density
from closedloop.simulators.device.landscape import HiddenLandscape
from closedloop.simulators.device.settings import DeviceSettings
from closedloop.simulators.trmc.process import (
    SearchBox,
    TrmcProcessModel,
    example_protocol_constraint,
    maximize_over_box,
)
from closedloop.simulators.truth import SearchRegion, search_box

LAMP_POWER = 0.1  # W/cm^2: AM1.5G, 100 mW/cm^2
CALIBRATION_POINTS = 1024  # Sobol points before the example protocol's constraint removes some
DEFAULT_SETTINGS = DeviceSettings()
SHORT_FRACTION = 0.7  # of device failures: pinhole shorts; the rest lost contacts (open circuit)


@dataclass(frozen=True)
class Calibration:
    """How film and hidden landscape are standardized and mixed; `achieved`: the rank correlation of
    film and latent quality on the calibration sample."""

    film_mean: float  # of log10 phi_sum_mu_max
    film_sd: float
    hidden_mean: float
    hidden_slope: float  # on the standardized film: removed, so the hidden part is uncorrelated with it
    hidden_sd: float
    angle: float
    achieved: float


@dataclass(frozen=True)
class SampledDevice:
    """One fabricated device: its cell and, when it failed, why (its J-V curve shows it)."""

    cell: DiodeParameters
    failure: str | None = None


def calibration_sample(box: SearchBox | None = None) -> list[dict[str, Value]]:
    """The fixed Sobol sample of the example protocol's space (its constraint applied)."""
    box = box or SearchBox()
    unit = qmc.Sobol(d=5, scramble=True, seed=0).random(CALIBRATION_POINTS)
    low, high, step = box.spin_speed
    n_spins = (high - low) // step + 1
    points: list[dict[str, Value]] = []
    for a, temp, time_min, spin, solvent in unit:
        point: dict[str, Value] = {
            "acceptor_fraction": box.acceptor_fraction[0] + a * (box.acceptor_fraction[1] - box.acceptor_fraction[0]),
            "anneal_temp": box.anneal_temp[0] + temp * (box.anneal_temp[1] - box.anneal_temp[0]),
            "anneal_time": box.anneal_time[0] + time_min * (box.anneal_time[1] - box.anneal_time[0]),
            "spin_speed": int(low + step * min(int(spin * n_spins), n_spins - 1)),
            "solvent": box.solvents[min(int(solvent * len(box.solvents)), len(box.solvents) - 1)],
        }
        if example_protocol_constraint(point) <= 0:
            points.append(point)
    return points


@lru_cache(maxsize=16)
def calibrate(settings: DeviceSettings) -> Calibration:
    """Mix weights for `settings`: bisection on the angle until the sample's rank correlation matches."""
    points = calibration_sample()
    film = np.log10(TrmcProcessModel().peak_values(points))
    film_mean, film_sd = float(film.mean()), float(film.std())
    z_film = (film - film_mean) / film_sd
    hidden = HiddenLandscape(settings.seed).values(points)
    hidden_mean = float(hidden.mean())
    slope = float(np.mean((hidden - hidden_mean) * z_film))
    residual = hidden - hidden_mean - slope * z_film
    hidden_sd = float(residual.std())
    z_hidden = residual / hidden_sd

    def rho(angle: float) -> float:
        return float(spearmanr(film, math.cos(angle) * z_film + math.sin(angle) * z_hidden).statistic)

    low, high = 0.0, math.pi  # rho(0) = 1, rho(pi) = -1, decreasing in between
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if rho(mid) > settings.proxy_correlation else (low, mid)
    angle = 0.5 * (low + high)
    return Calibration(film_mean, film_sd, hidden_mean, slope, hidden_sd, angle, rho(angle))


def _cells(u: np.ndarray) -> tuple[np.ndarray, ...]:
    """(Jph, J0, n, Rs, Rsh) of the latent quality u in (0, 1), each monotone in u."""
    return (1e-3 * (2.5 + 8.5 * u), 2e-8 * np.exp(-2.5 * u), 1.6 - 0.1 * u, 12.0 - 9.0 * u, 200.0 + 1300.0 * u)


class DeviceModel:
    """Conditions -> expected cell and PCE, sampled devices with scatter and failures, the best recipe."""

    def __init__(self, settings: DeviceSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self.film = TrmcProcessModel()
        self.hidden = HiddenLandscape(settings.seed)

    @property
    def calibration(self) -> Calibration:
        return calibrate(self.settings)

    def _quality(self, points: Sequence[Mapping[str, Value]], film_signal: np.ndarray) -> np.ndarray:
        """u = Phi(z) of each point, from its film signal and the hidden landscape."""
        c = self.calibration
        z_film = (np.log10(np.maximum(film_signal, 1e-30)) - c.film_mean) / c.film_sd
        z_hidden = (self.hidden.values(points) - c.hidden_mean - c.hidden_slope * z_film) / c.hidden_sd
        return np.asarray(ndtr(math.cos(c.angle) * z_film + math.sin(c.angle) * z_hidden))

    def expected_cell(self, conditions: Mapping[str, Value]) -> DiodeParameters:
        """The cell these conditions make, every scatter factor 1, no failure."""
        u = self._quality([conditions], np.array([self.true_film_signal(conditions)]))
        jph, j0, n, rs, rsh = (float(v[0]) for v in _cells(u))
        return DiodeParameters(jph=jph, j0=j0, n=n, rs=rs, rsh=rsh)

    def true_film_signal(self, conditions: Mapping[str, Value]) -> float:
        """Noise-free TRMC phi_sum_mu_max (cm^2/(V*s)) of the film: the film model's own."""
        return self.film.true_phi_sum_mu_max(conditions)

    def true_pce(self, conditions: Mapping[str, Value]) -> float:
        """Noise-free PCE (%) under 100 mW/cm^2."""
        u = self._quality([conditions], np.array([self.true_film_signal(conditions)]))
        return float(100.0 * max_power_density(*_cells(u))[0] / LAMP_POWER)

    def pce_values(self, points: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """true PCE (%) of many points at once (the film's batch peak values: the optimizer's workhorse)."""
        u = self._quality(points, self.film.peak_values(points))
        return np.asarray(100.0 * max_power_density(*_cells(u)) / LAMP_POWER)

    def failure_probability(self, conditions: Mapping[str, Value]) -> float:
        """A failed film (no photocurrent) or a failed device (short, lost contact)."""
        return 1.0 - (1.0 - self.film.failure_probability(conditions)) * (1.0 - self.settings.failure_rate)

    def sample_device(self, conditions: Mapping[str, Value], rng: np.random.Generator,
                      film_failure_probability: float | None = None) -> SampledDevice:
        """One device with its scatter. `film_failure_probability` replaces the film model's own (a line
        passes what its coater left undecided, 1 for a dewetted film); the random draws are the same."""
        cell = self.expected_cell(conditions)
        jph_f, rs_f, rsh_f = (math.exp(sd * rng.standard_normal() - 0.5 * sd**2) for sd in (0.06, 0.15, 0.3))
        p_film = self.film.failure_probability(conditions) if film_failure_probability is None else film_failure_probability
        film_failed = bool(rng.random() < p_film)
        device_failed = bool(rng.random() < self.settings.failure_rate)
        shorted = bool(rng.random() < SHORT_FRACTION)
        sampled = DiodeParameters(jph=cell.jph * jph_f, j0=cell.j0, n=cell.n, rs=cell.rs * rs_f, rsh=cell.rsh * rsh_f)
        if device_failed and shorted:
            return SampledDevice(DiodeParameters(sampled.jph, sampled.j0, sampled.n, sampled.rs, rsh=0.5 + rng.random()),
                                 failure="pinhole short")
        if device_failed:
            return SampledDevice(DiodeParameters(1e-3 * sampled.jph, sampled.j0, sampled.n, rs=1e6, rsh=1e7),
                                 failure="lost contact")
        if film_failed:
            return SampledDevice(DiodeParameters(0.0, sampled.j0, sampled.n, sampled.rs, sampled.rsh),
                                 failure="film without photoconductivity")
        return SampledDevice(sampled)

    def measure_pce(self, conditions: Mapping[str, Value], rng: np.random.Generator) -> float | None:
        """The PCE (%) of one fabricated device; None when it failed."""
        device = self.sample_device(conditions, rng)
        if device.failure is not None:
            return None
        cell = device.cell
        power = max_power_density(*(np.array([v]) for v in (cell.jph, cell.j0, cell.n, cell.rs, cell.rsh)))
        return float(100.0 * power[0] / LAMP_POWER)

    def optimum_pce(self, region: SearchRegion | None = None) -> tuple[dict[str, Value], float]:
        """The conditions of the best true PCE (%) over `region` (default: the example protocol's space
        with its constraint), found as the TRMC model finds its own optimum."""
        if region is None:
            return maximize_over_box(self.pce_values, SearchBox(), (example_protocol_constraint,), exact=self.true_pce)
        return maximize_over_box(self.pce_values, search_box(region), region.constraints, exact=self.true_pce)
