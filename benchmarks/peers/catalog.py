"""The problems of issue 23, by name: test functions, a mixed space, the TRMC and MBE simulators, pools."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from benchmarks.peers.problems import BenchProblem, LinearConstraint, Param, Pool, additive, lognormal
from closedloop.simulators.testfunctions import branin, hartmann6

DATA = Path(os.environ.get("CLOSEDLOOP_DATA", "/work/shared/data"))
ROOT = Path(__file__).resolve().parents[2]
X = Mapping[str, float | int | str]


def _hartmann(noise: float, q: int) -> BenchProblem:
    names = [f"x{i}" for i in range(1, 7)]
    return BenchProblem(
        name=f"hartmann6_noise{noise:g}_q{q}",
        description=f"Hartmann-6 on [0,1]^6, minimize, noise sd {noise:g}, batches of {q}",
        params=tuple(Param(n, "float") for n in names),
        maximize=False,
        truth=lambda x: hartmann6(np.array([float(x[n]) for n in names])),
        optimum=-3.32237,
        evaluations=48,
        q=q,
        noise=additive(noise),
        noise_label=f"additive sd {noise:g}",
    )


def _branin() -> BenchProblem:
    return BenchProblem(
        name="branin",
        description="Branin on [-5,10]x[0,15], minimize, noise-free",
        params=(Param("x1", "float", -5.0, 10.0), Param("x2", "float", 0.0, 15.0)),
        maximize=False,
        truth=lambda x: branin(float(x["x1"]), float(x["x2"])),
        optimum=0.397887,
        evaluations=30,
        n_initial=5,
    )


def levy(x: np.ndarray) -> float:
    """Levy function; minimum 0 at x = 1."""
    w = 1.0 + (x - 1.0) / 4.0
    middle = np.sum((w[:-1] - 1.0) ** 2 * (1.0 + 10.0 * np.sin(np.pi * w[:-1] + 1.0) ** 2))
    last = (w[-1] - 1.0) ** 2 * (1.0 + np.sin(2.0 * np.pi * w[-1]) ** 2)
    return float(np.sin(np.pi * w[0]) ** 2 + middle + last)


def _levy10() -> BenchProblem:
    names = [f"x{i}" for i in range(1, 11)]
    return BenchProblem(
        name="levy10",
        description="Levy-10 on [-10,10]^10, minimize, noise sd 0.1",
        params=tuple(Param(n, "float", -10.0, 10.0) for n in names),
        maximize=False,
        truth=lambda x: levy(np.array([float(x[n]) for n in names])),
        optimum=0.0,
        evaluations=60,
        n_initial=10,
        noise=additive(0.1),
        noise_label="additive sd 0.1",
    )


# The mixed problem: four fractions in [0, 1] with x1 + x2 <= 1, a catalyst (3) and a solvent (2). Each
# catalyst has its own optimum location; the pair sets the height, so the best pair is not the best
# catalyst on its own average.
_CENTRES = {"A": (0.2, 0.3, 0.7, 0.5), "B": (0.6, 0.3, 0.2, 0.8), "C": (0.45, 0.5, 0.5, 0.25)}
_HEIGHT = {("A", "P"): 1.0, ("A", "Q"): 0.8, ("B", "P"): 1.25, ("B", "Q"): 0.9, ("C", "P"): 0.85, ("C", "Q"): 1.4}
_MIXED_NAMES = ("x1", "x2", "x3", "x4")


def mixed_truth(x: X) -> float:
    v = np.array([float(x[n]) for n in _MIXED_NAMES])
    centre = np.array(_CENTRES[str(x["catalyst"])])
    height = _HEIGHT[(str(x["catalyst"]), str(x["solvent"]))]
    return float(height * np.exp(-np.sum((v - centre) ** 2) / (2 * 0.18**2)) + 0.15 * v[2])


@cache
def mixed_optimum() -> float:
    best = -math.inf
    for (catalyst, solvent), _ in _HEIGHT.items():
        def negative(v: np.ndarray, c: str = catalyst, s: str = solvent) -> float:
            return -mixed_truth({**dict(zip(_MIXED_NAMES, v, strict=True)), "catalyst": c, "solvent": s})

        for start in (np.array(_CENTRES[catalyst]), np.full(4, 0.5)):
            result = minimize(negative, start, bounds=[(0, 1)] * 4, method="SLSQP",
                              constraints=[{"type": "ineq", "fun": lambda v: 1.0 - v[0] - v[1]}])
            best = max(best, -float(result.fun))
    return best


def _mixed() -> BenchProblem:
    return BenchProblem(
        name="mixed_categorical_constraint",
        description="4 floats with x1 + x2 <= 1, two categoricals (3 x 2), maximize, noise sd 0.05",
        params=(*(Param(n, "float") for n in _MIXED_NAMES), Param("catalyst", "choice", values=("A", "B", "C")),
                Param("solvent", "choice", values=("P", "Q"))),
        maximize=True,
        truth=mixed_truth,
        optimum=mixed_optimum(),
        evaluations=30,
        noise=additive(0.05),
        noise_label="additive sd 0.05",
        constraints=(LinearConstraint({"x1": 1.0, "x2": 1.0}, 1.0),),
    )


def _params_of(protocol: str) -> tuple[tuple[Param, ...], dict[str, float | int | str]]:
    """The searched parameters of a protocol file and its fixed values."""
    from closedloop.controller.protocol.model import load_protocol
    from closedloop.planners.space import ChoiceParameter, FixedParameter, FloatParameter, IntParameter

    space = load_protocol(ROOT / "protocols" / protocol).to_problem().space
    params: list[Param] = []
    fixed: dict[str, float | int | str] = {}
    for p in space.parameters:
        if isinstance(p, FixedParameter):
            fixed[p.name] = p.value
        elif isinstance(p, ChoiceParameter):
            params.append(Param(p.name, "choice", values=tuple(str(v) for v in p.values)))
        elif isinstance(p, IntParameter):
            params.append(Param(p.name, "int", float(p.low), float(p.high), step=p.step))
        else:
            assert isinstance(p, FloatParameter)
            params.append(Param(p.name, "float", p.low, p.high, log=p.log))
    return tuple(params), fixed


@cache
def _trmc_optimum() -> float:
    """The film model's best phi*sum(mu) in the protocol's space (scatter does not move the truth)."""
    from closedloop.simulators.trmc.process import TrmcProcessModel, example_protocol_constraint

    return TrmcProcessModel().optimum([example_protocol_constraint])[1]


def _trmc(scatter: float) -> BenchProblem:
    from closedloop.simulators.trmc.process import TrmcProcessModel

    model = TrmcProcessModel(scatter=scatter)
    params, fixed = _params_of("trmc_opv_blend.yaml")

    def truth(x: X) -> float:
        return model.truth({**fixed, **x})["phi_sum_mu_max"]

    return BenchProblem(
        name=f"trmc_scatter{round(scatter * 100)}",
        description=f"TRMC film model (trmc_opv_blend.yaml's space), maximize phi*sum(mu), film scatter "
        f"{scatter:.0%}, films fail with the model's probability",
        params=params,
        maximize=True,
        truth=truth,
        optimum=_trmc_optimum(),
        evaluations=40,  # the campaign benchmark's budget (benchmarks/results/campaign_trmc*.json)
        n_initial=6,
        noise=lognormal(scatter),
        noise_label=f"lognormal {scatter:.0%}",
        constraints=(LinearConstraint({"anneal_temp": 1.0, "anneal_time": 2.0}, 220.0),),
        failure_probability=lambda x: model.truth({**fixed, **x})["failure_probability"],
        metric="trials_to_90",
        log_objective=True,
    )


def _mbe() -> BenchProblem:
    from closedloop.simulators.mbe.station import SimulatedMbeSystem

    station = SimulatedMbeSystem()
    params, fixed = _params_of("mbe_srruo3.yaml")

    def truth(x: X) -> float | None:
        film = station.truth({**fixed, **x})
        rrr = film.get("rrr")
        return None if rrr is None else float(rrr)

    return BenchProblem(
        name="mbe_failures",
        description="SrRuO3 MBE simulator (mbe_srruo3.yaml's space), maximize RRR; wrong-phase growths fail",
        params=params,
        maximize=True,
        truth=truth,
        optimum=station.optimum()[1],
        evaluations=30,
        n_initial=6,
        noise=lognormal(0.10),
        noise_label="lognormal 10 %",
    )


def _pool(name: str, path: Path, inputs: list[str] | None, objective: str, maximize: bool, evaluations: int,
          n_initial: int, description: str) -> BenchProblem:
    table = pd.read_csv(path)
    if inputs is None:  # every numeric column but the objective
        inputs = [c for c in table.columns if c != objective and pd.api.types.is_numeric_dtype(table[c])]
    table = table[[*inputs, objective]].dropna().groupby(inputs, as_index=False)[objective].mean()
    values = dict(zip(Pool(table, tuple(inputs), objective).rows_by_key(), table[objective], strict=True))
    pool = Pool(table.reset_index(drop=True), tuple(inputs), objective)
    best = float(table[objective].max() if maximize else table[objective].min())
    params = tuple(Param(c, "float", float(table[c].min()), float(table[c].max())) for c in inputs)

    def truth(x: X) -> float:
        return float(values[pool.key(x)])

    return BenchProblem(name=name, description=description, params=params, maximize=maximize, truth=truth,
                        optimum=best, evaluations=evaluations, n_initial=n_initial, pool=pool,
                        metric="trials_to_best")


def _liang(name: str, inputs: list[str], objective: str, maximize: bool, evaluations: int) -> BenchProblem:
    return _pool(f"pool_liang_{name.lower()}", DATA / "liang2021_benchmarking" / f"{name}_grouped_unique.csv",
                 inputs, objective, maximize, evaluations, 2, f"Liang et al. 2021 {name} table (pool)")


PROBLEMS: dict[str, Callable[[], BenchProblem]] = {
    "hartmann6_noise0.05_q1": lambda: _hartmann(0.05, 1),
    "hartmann6_noise0_q1": lambda: _hartmann(0.0, 1),
    "hartmann6_noise0.05_q4": lambda: _hartmann(0.05, 4),
    "branin": _branin,
    "levy10": _levy10,
    "mixed_categorical_constraint": _mixed,
    "trmc_scatter0": lambda: _trmc(0.0),
    "trmc_scatter10": lambda: _trmc(0.10),
    "trmc_scatter15": lambda: _trmc(0.15),
    "mbe_failures": _mbe,
    "pool_cu_grain_boundary": lambda: _pool(
        "pool_cu_grain_boundary", DATA / "physbo_cu_gb_s5_210" / "s5-210.csv", ["dx", "gb", "dz"], "gb_energy",
        False, 100, 20, "Cu Sigma5 grain-boundary energies, 17,982 rows (Kiyohara et al. 2016)"),
    "pool_melting_points": lambda: _pool(
        "pool_melting_points", DATA / "seko2014_melting_temps" / "seko_melting_with_elemental_descriptors.csv",
        None, "Tm_K", True, 60, 2, "Seko et al. 2014 melting points, every numeric elemental descriptor"),
    "pool_liang_crossed_barrel": lambda: _liang("Crossed_barrel", ["n", "theta", "r", "t"], "toughness", True, 150),
    "pool_liang_perovskite": lambda: _liang("Perovskite", ["CsPbI", "FAPbI", "MAPbI"], "Instability index", False, 60),
    "pool_liang_agnp": lambda: _liang(
        "AgNP", ["QAgNO3(%)", "Qpva(%)", "Qtsc(%)", "Qseed(%)", "Qtot(uL/min)"], "loss", False, 90),
    "pool_liang_p3ht": lambda: _liang(
        "P3HT", ["P3HT content (%)", "D1 content (%)", "D2 content (%)", "D6 content (%)", "D8 content (%)"],
        "Conductivity (measured) (S/cm)", True, 90),
    "pool_liang_autoam": lambda: _liang(
        "AutoAM", ["Prime Delay", "Print Speed", "X Offset Correction", "Y Offset Correction"], "Score", True, 60),
}


def problem(name: str) -> BenchProblem:
    try:
        return PROBLEMS[name]()
    except KeyError:
        raise SystemExit(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}") from None
