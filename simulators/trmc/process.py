"""Process model of a P3HT:PCBM-like blend: spin-coat + anneal conditions -> film -> expected TRMC result.

Assumed, literature-informed and smooth (see shared/DOMAIN.md, TRMC), so a planner has an optimum to find
(T in degC, t in min, a = acceptor fraction):

- thickness L = 110 nm * sqrt(2000 rpm / spin_speed) * solvent factor (spin-coating's omega^-1/2 law);
- annealing orders the film: o = sigmoid((T - 95)/10) * (1 - exp(-t / t_a)), t_a = 5 min *
  exp(-(T - 95)/30): little below ~80 C, a rise above 80-100 C, saturation within minutes at 140 C;
- above 150 C the film degrades, d = exp(-((T - 150)/35)^2 * sqrt(t/10)), and long hot anneals coarsen
  the blend, c = 1 - exp(-t/60 * exp((T - 140)/25)): fewer interfaces (lower yield), longer lifetimes.
  The expected phi_sum_mu_max peaks near 145-155 C after a few minutes and falls above ~170 C;
- sum_mu = 0.02 cm^2/(V*s) * (0.12 + 0.88 o) * d * composition * solvent * thickness factors, with the
  composition optimum at a = 0.44 + 0.06 o (Gaussian, width 0.25) and a weak thickness optimum near
  100 nm; phi = 0.35 * solvent yield * sigmoid((a - 0.22)/0.05) * (1 - 0.35 c). With the kinetics the
  expected peak is highest at a ~0.53;
- decay: k1 = 2.5e6/s * (1.5 - a)^2 * (1 + 2 (1 - o)) * (1 + 3 (1 - d)) * (1 - 0.5 c) * solvent and
  k2 = 3e-12 cm^3/s * solvent. More acceptor, coarser morphologies and slow-drying toluene live longer
  while their peak is lower, and a higher yield means faster bimolecular decay: tau_half trades off
  against phi_sum_mu_max, so a second objective has a real Pareto front;
- o-dichlorobenzene is the best solvent, chlorobenzene ~5 % behind, chloroform and toluene far behind;
- sample-to-sample scatter: lognormal with mean 1 and sd 15 % on sum_mu (scales phi_sum_mu_max exactly)
  and median 1, sd 10 % on k1 (moves tau_half);
- failed films (no photoconductive signal): 2 % everywhere, rising with anneal temperature x time
  above ~180 C (decomposition), with spin speed above ~3800 rpm (too thin: dewetting), and for toluene
  with acceptor fraction above ~0.7 (PCBM aggregates). About 10 % of random legal points fail.

`true_phi_sum_mu_max` is the noise-free value with every scatter factor 1 (the mean of the sum_mu factor,
the median of the k1 factor): the expectation over samples to within ~0.2 %.
About 1 % of the example protocol's legal space lies within 90 % of the optimum (the expected
phi_sum_mu_max there is ~3.2e-3, the median legal point ~30 % of that): random search needs ~100 trials
to get there; a plain BoTorch loop (8 Sobol points, then a mixed GP with qLogNEI, failures switched
off) needed 12, 16, 17, 28 and 34 trials over six seeds; the sixth reached 0.89 of the optimum in 35.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from closedloop.drivers.base import EnvelopeViolation, Value
from closedloop.simulators.trmc.physics import (
    Cavity,
    Excitation,
    Film,
    Timebase,
    carrier_fraction,
    cavity_filter,
    choose_timebase,
    generated_density,
    noise_free_phi_sum_mu,
    transient_figures,
    truth_of,
)

PROCESS_PARAMETERS = ("acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent")
DEFAULT_FLUENCE = 3e14  # photons/cm^2 per pulse: best films give |dPr/Pr| ~ 5e-3, the worst still ~10x noise

# Constraint callables follow LinearConstraint.evaluate: <= 0 where the conditions are allowed.
Constraint = Callable[[Mapping[str, Value]], float]


@dataclass(frozen=True)
class SolventEffect:
    thickness: float  # relative film thickness (viscosity, drying speed)
    mobility: float  # slow drying -> more ordered P3HT
    yield_: float  # finer morphology -> more interface, more charge generation
    k1: float  # finer morphology -> faster recombination
    k2: float


SOLVENT_EFFECTS: dict[str, SolventEffect] = {
    "o-dichlorobenzene": SolventEffect(thickness=0.9, mobility=1.0, yield_=1.0, k1=0.8, k2=1.0),
    "chlorobenzene": SolventEffect(thickness=1.0, mobility=0.96, yield_=1.0, k1=1.0, k2=1.0),
    "chloroform": SolventEffect(thickness=1.3, mobility=0.5, yield_=1.1, k1=1.6, k2=1.5),
    "toluene": SolventEffect(thickness=0.95, mobility=0.45, yield_=0.7, k1=0.45, k2=0.7),
}


@dataclass(frozen=True)
class SearchBox:
    """The example protocol's search space (protocols/trmc_opv_blend.yaml)."""

    acceptor_fraction: tuple[float, float] = (0.2, 0.8)
    anneal_temp: tuple[float, float] = (60.0, 200.0)
    anneal_time: tuple[float, float] = (1.0, 30.0)
    spin_speed: tuple[int, int, int] = (600, 4000, 100)  # low, high, step
    solvents: tuple[str, ...] = ("chlorobenzene", "o-dichlorobenzene", "chloroform")

    def sample(self, rng: np.random.Generator, constraints: Sequence[Constraint] = ()) -> dict[str, Value]:
        """One uniformly random legal point (rejection sampling against `constraints`)."""
        for _ in range(10_000):
            low, high, step = self.spin_speed
            point: dict[str, Value] = {
                "acceptor_fraction": float(rng.uniform(*self.acceptor_fraction)),
                "anneal_temp": float(rng.uniform(*self.anneal_temp)),
                "anneal_time": float(rng.uniform(*self.anneal_time)),
                "spin_speed": int(low + step * rng.integers(0, (high - low) // step + 1)),
                "solvent": str(rng.choice(self.solvents)),
            }
            if all(c(point) <= 0 for c in constraints):
                return point
        raise ValueError(
            "no legal point found in 10000 draws: the constraints leave (almost) nothing of the box"
        )


def example_protocol_constraint(conditions: Mapping[str, Value]) -> float:
    """anneal_temp + 2 * anneal_time <= 220, as LinearConstraint.evaluate would give it."""
    return float(conditions["anneal_temp"]) + 2.0 * float(conditions["anneal_time"]) - 220.0


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def coated_thickness_nm(spin_speed: float, solvent: str) -> float:
    """Film thickness off the spin coater (nm): omega^-1/2, scaled by the solution's viscosity/drying."""
    return 110.0 * math.sqrt(2000.0 / spin_speed) * SOLVENT_EFFECTS[solvent].thickness


def dewetting_risk(spin_speed: float) -> float:
    """Chance a film dewets while it dries (unscaled): films spun thinner than ~60 nm break up."""
    return _sigmoid((spin_speed - 3900.0) / 70.0)


def absorption_shape(wavelength_nm: float, acceptor_fraction: float) -> float:
    """Absorbance relative to 500 nm: the P3HT band (~525 nm) plus PCBM's rise toward the UV."""
    p3ht = math.exp(-0.5 * ((wavelength_nm - 525.0) / 60.0) ** 2) / math.exp(-0.5 * (25.0 / 60.0) ** 2)
    pcbm = math.exp(-(min(wavelength_nm, 350.0 + 450.0) - 500.0) / 90.0) if wavelength_nm > 350 else 5.3
    return (1.0 - acceptor_fraction) * p3ht + acceptor_fraction * 0.35 * pcbm


class TrmcProcessModel:
    """Conditions -> film -> expected TRMC figures, with sample scatter and failed films.

    `fluence` and `wavelength` are the measurement's defaults; conditions may override them.
    """

    def __init__(
        self,
        *,
        fluence: float = DEFAULT_FLUENCE,
        wavelength: float = 500.0,
        cavity: Cavity | None = None,
        failure_rate_scale: float = 1.0,
        scatter: float = 0.15,
    ) -> None:
        if failure_rate_scale < 0:
            raise ValueError(f"failure_rate_scale must be >= 0, got {failure_rate_scale}")
        self.fluence = fluence
        self.wavelength = wavelength
        self.cavity = cavity or Cavity()
        self.failure_rate_scale = failure_rate_scale
        self.scatter = scatter

    def excitation(self, conditions: Mapping[str, Value]) -> Excitation:
        return Excitation(
            fluence=float(conditions.get("fluence", self.fluence)),
            wavelength_nm=float(conditions.get("wavelength", self.wavelength)),
        )

    def expected_film(self, conditions: Mapping[str, Value]) -> Film:
        """The film these conditions make, every sample-scatter factor 1."""
        a, temp, time_min, spin, solvent = _process_values(conditions)
        effect = SOLVENT_EFFECTS[solvent]
        thickness_nm = coated_thickness_nm(spin, solvent)
        order = _sigmoid((temp - 95.0) / 10.0) * (
            1.0 - math.exp(-time_min / (5.0 * math.exp(-(temp - 95.0) / 30.0)))
        )
        degradation = math.exp(-((max(0.0, temp - 150.0) / 35.0) ** 2) * math.sqrt(time_min / 10.0))
        coarsening = 1.0 - math.exp(-time_min / 60.0 * math.exp((temp - 140.0) / 25.0))
        composition = math.exp(-0.5 * ((a - (0.44 + 0.06 * order)) / 0.25) ** 2)
        thickness_factor = math.exp(-0.5 * (math.log(thickness_nm / 100.0) / 2.5) ** 2)
        sum_mu = 0.02 * (0.12 + 0.88 * order) * degradation * composition * effect.mobility * thickness_factor
        phi = 0.35 * effect.yield_ * _sigmoid((a - 0.22) / 0.05) * (1.0 - 0.35 * coarsening)
        k1 = (
            2.5e6
            * (1.5 - a) ** 2
            * (1.0 + 2.0 * (1.0 - order))
            * (1.0 + 3.0 * (1.0 - degradation))
            * (1.0 - 0.5 * coarsening)
            * effect.k1
        )
        # Annealing makes P3HT crystallize and absorb more; PCBM absorbs far less at 500 nm.
        alpha_500 = (1.0 - a) * 2.0e5 * (0.85 + 0.25 * order) + a * 0.4e5
        wavelength = float(conditions.get("wavelength", self.wavelength))
        od = max(1e-3, alpha_500 * absorption_shape(wavelength, a) * thickness_nm * 1e-7 / math.log(10.0))
        return Film(
            phi=phi, sum_mu=sum_mu, k1=k1, k2=3e-12 * effect.k2, od=od, thickness_cm=thickness_nm * 1e-7
        )

    def _risks(self, conditions: Mapping[str, Value]) -> dict[str, float]:
        """Each way a film fails, as a probability (scaled by `failure_rate_scale`, at most 1)."""
        a, temp, time_min, spin, solvent = _process_values(conditions)
        risks = {
            "baseline": 0.02,
            "decomposition": _sigmoid((temp - 190.0) / 8.0 + 0.8 * math.log(time_min / 10.0)),
            "dewetting": dewetting_risk(spin),  # too thin
            "aggregation": _sigmoid((a - 0.7) / 0.04) if solvent == "toluene" else 0.0,  # PCBM aggregates
        }
        return {name: min(1.0, self.failure_rate_scale * r) for name, r in risks.items()}

    def failure_probability(self, conditions: Mapping[str, Value]) -> float:
        return 1.0 - math.prod(1.0 - r for r in self._risks(conditions).values())

    def dewetting_probability(self, spin_speed: float) -> float:
        """The part of `failure_probability` decided on the spin coater: the film dewets while it dries."""
        return min(1.0, self.failure_rate_scale * dewetting_risk(spin_speed))

    def later_failure_probability(self, conditions: Mapping[str, Value]) -> float:
        """The chance a film that did not dewet still has no signal (annealing, aggregation, bad luck):
        (1 - this) * (1 - dewetting_probability) = 1 - failure_probability."""
        risks = self._risks(conditions)
        return 1.0 - math.prod(1.0 - r for name, r in risks.items() if name != "dewetting")

    def sample_film(
        self, conditions: Mapping[str, Value], rng: np.random.Generator, failure_probability: float | None = None
    ) -> tuple[Film, bool]:
        """(film, failed) for one sample. A failed film keeps its geometry but has no photoconductivity.

        `failure_probability` replaces the model's own (a line whose coater already decided dewetting
        passes `later_failure_probability`, or 1 for a dewetted film); the random draws are the same.
        """
        film = self.expected_film(conditions)
        sd_mu = self.scatter
        sigma_mu = math.sqrt(math.log(1.0 + sd_mu**2))
        mu_factor = math.exp(sigma_mu * rng.standard_normal() - 0.5 * sigma_mu**2)
        k1_factor = math.exp(math.sqrt(math.log(1.0 + (sd_mu / 1.5) ** 2)) * rng.standard_normal())
        p_fail = self.failure_probability(conditions) if failure_probability is None else failure_probability
        failed = bool(rng.random() < p_fail)
        sample = Film(
            phi=0.0 if failed else film.phi,
            sum_mu=film.sum_mu * mu_factor,
            k1=film.k1 * k1_factor,
            k2=film.k2,
            od=film.od,
            thickness_cm=film.thickness_cm,
        )
        return sample, failed

    def truth(self, conditions: Mapping[str, Value]) -> dict[str, float]:
        """Noise-free phi_sum_mu_max (cm^2/(V*s)), tau_half (ns) and failure probability."""
        film = self.expected_film(conditions)
        excitation = self.excitation(conditions)
        time_s = choose_timebase(film, excitation, self.cavity).times()
        figures = truth_of(time_s, noise_free_phi_sum_mu(time_s, film, excitation, self.cavity))
        return {
            "phi_sum_mu_max": figures.phi_sum_mu_max,
            "tau_half": figures.tau_half_ns,
            "failure_probability": self.failure_probability(conditions),
        }

    def true_phi_sum_mu_max(self, conditions: Mapping[str, Value]) -> float:
        return self.truth(conditions)["phi_sum_mu_max"]

    def true_tau_half(self, conditions: Mapping[str, Value]) -> float:
        return self.truth(conditions)["tau_half"]

    def peak_values(self, points: Sequence[Mapping[str, Value]]) -> np.ndarray:
        """true phi_sum_mu_max of many points at once: the optimizer's workhorse.

        The peak comes within a few cavity times, so a short, fine record shared by all points suffices;
        a point still rising at its end falls back to `true_phi_sum_mu_max`.
        """
        films = [self.expected_film(p) for p in points]
        excitations = [self.excitation(p) for p in points]
        time_s = Timebase(dt_s=0.5e-9, n_points=int(30 * self.cavity.tau_cav_s / 0.5e-9)).times()
        kappa = np.array([f.k2 * generated_density(f, e) for f, e in zip(films, excitations, strict=True)])
        k1 = np.array([f.k1 for f in films])
        u = carrier_fraction(time_s, excitations[0].interval_weights(time_s), k1, kappa)
        observed = cavity_filter(u, time_s[1] - time_s[0], self.cavity.tau_cav_s)
        peak, _, _ = transient_figures(time_s, observed)
        values = peak * np.array([f.phi * f.sum_mu for f in films])
        for i in np.flatnonzero(np.argmax(observed, axis=1) >= time_s.size - 2).tolist():
            values[i] = self.true_phi_sum_mu_max(points[i])
        return values

    def optimum(
        self, constraints: Sequence[Constraint] = (), box: SearchBox | None = None
    ) -> tuple[dict[str, Value], float]:
        """The conditions maximizing the expected phi_sum_mu_max in `box` subject to `constraints`.

        Deterministic: a grid over the continuous parameters per solvent and spin speed, then SLSQP from
        the best grid points; spin speed is searched on its own grid since it is an integer parameter.
        """
        return maximize_over_box(self.peak_values, box or SearchBox(), constraints, exact=self.true_phi_sum_mu_max)


def _process_values(conditions: Mapping[str, Value]) -> tuple[float, float, float, float, str]:
    missing = [p for p in PROCESS_PARAMETERS if p not in conditions]
    if missing:
        raise EnvelopeViolation(
            missing[0], None, f"the TRMC station needs {', '.join(missing)}: add them to the protocol's space"
        )
    solvent = str(conditions["solvent"])
    if solvent not in SOLVENT_EFFECTS:
        raise EnvelopeViolation("solvent", solvent, f"not one of {sorted(SOLVENT_EFFECTS)}")
    return (
        float(conditions["acceptor_fraction"]),
        float(conditions["anneal_temp"]),
        max(float(conditions["anneal_time"]), 1e-3),  # zero anneal time: an unannealed film
        float(conditions["spin_speed"]),
        solvent,
    )


_CONTINUOUS = ("acceptor_fraction", "anneal_temp", "anneal_time")


# Many points -> their (positive) values at once; the optimizer below maximizes it.
BatchValues = Callable[[Sequence[Mapping[str, Value]]], np.ndarray]


def maximize_over_box(
    values: BatchValues,
    box: SearchBox,
    constraints: Sequence[Constraint] = (),
    exact: Callable[[Mapping[str, Value]], float] | None = None,
) -> tuple[dict[str, Value], float]:
    """The conditions maximizing `values` (positive; searched in log) over `box` subject to `constraints`.

    Deterministic: a grid over the continuous parameters per solvent and spin speed, then COBYLA from the
    best grid point of each solvent; spin speed is searched on its own grid since it is an integer
    parameter. `exact` (default: `values` of the one point) gives the reported value of the best point.
    """
    low, high, step = box.spin_speed
    spins = list(range(low, high + 1, step))
    bounds = [box.acceptor_fraction, box.anneal_temp, box.anneal_time]
    axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(bounds, (9, 12, 8), strict=True)]
    grid: list[dict[str, Value]] = [
        {**dict(zip(_CONTINUOUS, map(float, x), strict=True)), "spin_speed": s, "solvent": solvent}
        for solvent in box.solvents
        for s in spins[:: max(1, len(spins) // 8)]
        for x in np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    ]
    grid = [p for p in grid if all(c(p) <= 0 for c in constraints)]
    if not grid:
        raise ValueError("the constraints exclude every grid point of the search box: check them")
    grid_values = np.concatenate([values(grid[i : i + 2000]) for i in range(0, len(grid), 2000)])
    best: tuple[dict[str, Value], float] | None = None
    for solvent in box.solvents:
        mine = [i for i, p in enumerate(grid) if p["solvent"] == solvent]
        if not mine:
            continue
        start = grid[max(mine, key=lambda i: grid_values[i])]
        point = _refine_continuous(values, start, bounds, constraints)
        point = _refine_spin(values, point, spins, constraints)
        point = _refine_continuous(values, point, bounds, constraints)
        value = exact(point) if exact is not None else float(values([point])[0])
        if best is None or value > best[1]:
            best = (point, value)
    assert best is not None
    return best


def _refine_continuous(
    values: BatchValues,
    start: dict[str, Value],
    bounds: list[tuple[float, float]],
    constraints: Sequence[Constraint],
) -> dict[str, Value]:
    """COBYLA over the continuous parameters scaled to [0, 1], spin speed and solvent held."""
    lows = np.array([b[0] for b in bounds])
    spans = np.array([b[1] - b[0] for b in bounds])

    def point(z: np.ndarray) -> dict[str, Value]:
        x = lows + np.clip(z, 0.0, 1.0) * spans
        return {**start, **dict(zip(_CONTINUOUS, map(float, x), strict=True))}

    def objective(z: np.ndarray) -> float:
        return -math.log(max(float(values([point(z)])[0]), 1e-30))

    def holds(c: Constraint) -> Callable[[np.ndarray], float]:
        """`c` as COBYLA's inequality: >= 0 where the constraint holds."""
        return lambda z: -c(point(z))

    z0 = (np.array([float(start[n]) for n in _CONTINUOUS]) - lows) / spans
    result = minimize(
        objective,
        z0,
        method="COBYLA",
        bounds=[(0.0, 1.0)] * 3,
        constraints=[{"type": "ineq", "fun": holds(c)} for c in constraints],
        options={"rhobeg": 0.1, "tol": 1e-4, "maxiter": 300},
    )
    candidate = point(result.x)
    feasible = all(c(candidate) <= 1e-9 for c in constraints)
    better = objective(result.x) <= objective(z0)
    return candidate if feasible and better else start


def _refine_spin(
    values: BatchValues, start: dict[str, Value], spins: list[int], constraints: Sequence[Constraint]
) -> dict[str, Value]:
    points = [{**start, "spin_speed": s} for s in spins]
    points = [p for p in points if all(c(p) <= 0 for c in constraints)] or [start]
    return points[int(np.argmax(values(points)))]
