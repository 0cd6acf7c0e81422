"""Planner-only multi-fidelity benchmark: instrument-hours until a device reaches 90 % of the best PCE.

Three strategies side by side on the same truth and seeds, each a loop propose -> measure -> observe in
this process (no engine): "multifidelity" (the multifidelity planner choosing TRMC films, 20 min, or
devices, 24 h), "pce_only" (the botorch planner on devices alone) and "lab" (the lab's habit: botorch on
TRMC films alone for `--lab-films` films, then devices for the five best measured films). A strategy
reaches the target at the first *device* measurement whose true PCE is >= 90 % of the optimum; its cost
is the hours spent until then, failed measurements included. Runs that do not get there within
`--budget-devices` devices' worth of hours are censored (counted as later than any run that did).

Truth: `closedloop.simulators.device.model.DeviceModel` at each asked proxy correlation (films measured
with the TRMC station's film-to-film scatter, devices with the model's own scatter and failures).

    $ .venv/bin/python benchmarks/multifidelity_planner.py --seeds 20 --workers 2   # writes results/multifidelity_planner.json
    $ .venv/bin/python benchmarks/multifidelity_planner.py --seeds 2 --budget-devices 15 --json /tmp/try.json  # a trial run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.controller.offline.bench_metrics import censored_median  # noqa: E402
from closedloop.controller.offline.campaign_bench import machine, search_region  # noqa: E402
from closedloop.controller.protocol.model import load_protocol  # noqa: E402
from closedloop.planners.space import Fidelity, Objective, Observation, Problem  # noqa: E402
from closedloop.records import Value  # noqa: E402
from closedloop.simulators.device.model import DeviceModel, DeviceSettings  # noqa: E402
from closedloop.simulators.trmc.process import TrmcProcessModel  # noqa: E402

PROTOCOL = Path(__file__).resolve().parents[1] / "protocols" / "trmc_opv_blend.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "multifidelity_planner.json"
FILM_HOURS, DEVICE_HOURS = 20 / 60, 24.0
FILM_SCATTER = 0.15  # the TRMC station's lognormal film-to-film scatter (DOMAIN.md)
REACH = 0.9
# A smaller optimizer and fit budget than the planners' defaults, the same for every strategy: 20 seeds of three
# strategies at two correlations are thousands of decisions on 2 cores. The planning-time figure uses the defaults.
FAST_OPTIMIZER = {"num_restarts": 3, "raw_samples": 64, "mc_samples": 64, "fit_maxiter": 50}
STRATEGIES = ("multifidelity", "pce_only", "lab")
FIDELITIES = (
    Fidelity("film", "phi_sum_mu_max", FILM_HOURS, log=True),
    Fidelity("device", "pce", DEVICE_HOURS, target=True),
)


def make_truth(correlation: float, seed: int) -> DeviceModel:
    return DeviceModel(DeviceSettings(proxy_correlation=correlation, seed=seed))


def measure_film(truth: DeviceModel, film: TrmcProcessModel, c: Mapping[str, Value], rng: np.random.Generator) -> Observation:
    if rng.random() < film.failure_probability(c):
        return Observation(dict(c), {}, True, "film")
    sigma = math.sqrt(math.log(1.0 + FILM_SCATTER**2))
    value = truth.true_film_signal(c) * math.exp(sigma * rng.standard_normal() - sigma**2 / 2)
    return Observation(dict(c), {"phi_sum_mu_max": value}, False, "film")


class Campaign:
    """One strategy's run: spends hours, records devices, knows when the target was reached."""

    def __init__(self, truth: DeviceModel, optimum: float, budget_hours: float, seed: int) -> None:
        self.truth, self.optimum, self.budget = truth, optimum, budget_hours
        self.rng = np.random.default_rng(seed)
        self.film = TrmcProcessModel()
        self.hours = 0.0
        self.reached: float | None = None
        self.films = self.devices = 0

    @property
    def over(self) -> bool:
        return self.reached is not None or self.hours >= self.budget

    def measure(self, c: Mapping[str, Value], fidelity: str) -> Observation:
        if fidelity == "film":
            self.hours += FILM_HOURS
            self.films += 1
            return measure_film(self.truth, self.film, c, self.rng)
        self.hours += DEVICE_HOURS
        self.devices += 1
        pce = self.truth.measure_pce(c, self.rng)
        if pce is None:
            return Observation(dict(c), {}, True, "device")
        if self.truth.true_pce(c) >= REACH * self.optimum and self.reached is None:
            self.reached = self.hours
        return Observation(dict(c), {"pce": pce}, False, "device")


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from closedloop.planners.registry import make_planner

    torch.set_num_threads(1)
    base, mf = problems()
    truth = make_truth(job["correlation"], job["seed"])
    optimum = truth.optimum_pce(search_region(load_protocol(PROTOCOL)))[1]
    run = Campaign(truth, optimum, job["budget_devices"] * DEVICE_HOURS, job["seed"])
    started, cpu = time.perf_counter(), time.process_time()
    seed0 = job["seed"] * 1_000_003
    observations: list[Observation] = []
    strategy = job["strategy"]
    optimizer = job["optimizer"]  # the same optimizer budget for every strategy's planner
    if strategy == "multifidelity":
        planner = make_planner("multifidelity", **job["options"], **optimizer)
        while not run.over:
            (p,) = planner.propose(mf, observations, [], 1, seed0 + len(observations))
            observations.append(run.measure(p.conditions, p.provenance.fidelity or "device"))
    elif strategy == "pce_only":
        planner = make_planner("botorch", n_initial=8, **optimizer)
        device_problem = replace(base, objectives=(Objective("pce"),))
        while not run.over:
            (p,) = planner.propose(device_problem, observations, [], 1, seed0 + len(observations))
            observations.append(replace(run.measure(p.conditions, "device"), fidelity=None))
    else:  # the lab: BO on films alone, then devices for the five best films
        planner = make_planner("botorch", n_initial=8, **optimizer)
        films: list[Observation] = []
        while len(films) < job["lab_films"] and not run.over:
            (p,) = planner.propose(base, films, [], 1, seed0 + len(films))
            films.append(replace(run.measure(p.conditions, "film"), fidelity=None))
        best = sorted((o for o in films if not o.failed), key=lambda o: -o.values["phi_sum_mu_max"])[:5]
        for o in best:
            if not run.over:
                run.measure(o.conditions, "device")
    return {
        **{k: job[k] for k in ("strategy", "correlation", "seed")},
        "hours_to_target": None if run.reached is None else round(run.reached, 3),
        "hours_spent": round(run.hours, 3), "films": run.films, "devices": run.devices,
        "wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(time.process_time() - cpu, 1),
    }  # fmt: skip


def problems() -> tuple[Problem, Problem]:
    """The protocol's film problem as the controller builds it, and its multi-fidelity version (PCE the target)."""
    base = load_protocol(PROTOCOL).to_problem()
    return base, replace(base, objectives=(Objective("pce"),), fidelities=FIDELITIES)


def planning_time(n: int, options: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one multifidelity propose given `n` mixed observations (5 films per device, failures kept)."""
    import torch

    from closedloop.planners.encoding import SpaceEncoding
    from closedloop.planners.registry import make_planner
    from closedloop.planners.sampling import sample_legal

    torch.set_num_threads(1)
    _, mf = problems()
    truth = make_truth(0.8, 0)
    run = Campaign(truth, math.inf, math.inf, 0)
    points = sample_legal(SpaceEncoding(mf.space), n, 7)
    observations = [run.measure(c, "device" if i % 6 == 5 else "film") for i, c in enumerate(points)]
    planner = make_planner("multifidelity", **options)
    planner.propose(mf, observations[:40], [], 1, 0)  # the first call in a process pays one-time costs
    started, cpu = time.perf_counter(), time.process_time()
    (p,) = planner.propose(mf, observations, [], 1, 1)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    # The botorch planner on as many observations of one source (PCE only), on this machine at this load.
    device_problem = replace(mf, fidelities=())
    reference = [replace(o, values={"pce": truth.true_pce(o.conditions)} if not o.failed else {}, fidelity=None)
                 for o in observations]  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    make_planner("botorch", n_initial=8).propose(device_problem, reference, [], 1, 1)
    return {"observations": n, "devices": run.devices, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
            "fit_s": round(p.provenance.fit_time_s, 2), "botorch_seconds_same_n": round(time.perf_counter() - started, 2),
            "botorch_cpu_seconds_same_n": round(time.process_time() - cpu, 2),
            "fidelity": p.provenance.fidelity, "reason": p.provenance.fidelity_reason}  # fmt: skip


def summary(runs: list[dict[str, Any]], budget_hours: float) -> dict[str, Any]:
    hours = [r["hours_to_target"] for r in runs]
    ordered = sorted(h if h is not None else math.inf for h in hours)  # censored runs last
    # Nearest-rank quartiles: interpolating between a finite run and a censored one has no meaning.
    q = [ordered[max(0, math.ceil(f * len(ordered)) - 1)] for f in (0.25, 0.5, 0.75)]
    shown = [None if math.isinf(v) else round(v, 1) for v in q]
    return {"reached": sum(h is not None for h in hours), "runs": len(runs), "median_hours": censored_median(hours),
            "iqr_hours": [shown[0], shown[2]], "budget_hours": budget_hours,
            "median_films": statistics.median(r["films"] for r in runs),
            "median_devices": statistics.median(r["devices"] for r in runs)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correlations", default="0.8,0", help="proxy rank correlations to run, comma-separated")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget-devices", type=float, default=40, help="budget in devices' worth of hours (24 h each)")
    parser.add_argument("--lab-films", type=int, default=40, help="films the lab heuristic screens before devices")
    parser.add_argument("--options", default="{}", help="multifidelity planner options as JSON")
    parser.add_argument("--optimizer", default=json.dumps(FAST_OPTIMIZER),
                        help="optimizer and fit budget for every strategy's planner, as JSON ({} for the planners' defaults)")
    parser.add_argument("--timing-observations", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=str(RESULTS),
                        help=f"report file (default: {RESULTS.relative_to(RESULTS.parents[2])})")
    args = parser.parse_args(argv)  # fmt: skip
    # 24 films (8 h, a third of one device) map the space before any device: protocols/opv_device_mf.yaml's design.
    options = {"n_initial": 24, **json.loads(args.options)}
    optimizer = json.loads(args.optimizer)
    correlations = [float(c) for c in args.correlations.split(",")]
    jobs = [
        {"strategy": s, "correlation": r, "seed": seed, "budget_devices": args.budget_devices,
         "lab_films": args.lab_films, "options": options, "optimizer": optimizer}
        for r in correlations for seed in range(args.seeds) for s in STRATEGIES
    ]  # fmt: skip
    load_before, started, cpu = os.getloadavg(), time.perf_counter(), time.process_time()
    with ProcessPoolExecutor(args.workers) as pool:
        timing = pool.submit(planning_time, args.timing_observations, options)
        runs = []
        for run in pool.map(run_one, jobs):  # in job order, printed as they finish
            runs.append(run)
            print(f"{run['strategy']:14s} correlation {run['correlation']:g} seed {run['seed']}: "
                  f"{run['hours_to_target']} h to target ({run['films']} films, {run['devices']} devices, "
                  f"{run['wall_s']} s)", flush=True)  # fmt: skip
        timing_result = timing.result()
    budget_hours = args.budget_devices * DEVICE_HOURS
    results: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    for r in correlations:
        by = {s: summary([x for x in runs if x["strategy"] == s and x["correlation"] == r], budget_hours) for s in STRATEGIES}
        mf, pce = by["multifidelity"]["median_hours"], by["pce_only"]["median_hours"]
        ratio = None if mf is None or pce is None else round(mf / pce, 3)
        results[f"correlation {r:g}"] = {**by, "multifidelity_over_pce_only": ratio}
        limit = 0.5 if r >= 0.5 else 1.1
        checks[f"correlation {r:g}: multifidelity <= {limit} x pce_only"] = None if ratio is None else ratio <= limit
    report = {
        "benchmark": __doc__.splitlines()[0], "truth": "device", "protocol": str(PROTOCOL.name),
        "seeds": args.seeds, "options": options, "optimizer": optimizer, "lab_films": args.lab_films, "results": results, "checks": checks,
        "planning_time": timing_result, "machine": machine(), "load_before": load_before, "load_after": os.getloadavg(),
        "wall_s": round(time.perf_counter() - started, 1), "cpu_s_workers": round(sum(x["cpu_s"] for x in runs), 1),
        "cpu_s_main": round(time.process_time() - cpu, 1), "runs": runs,
    }  # fmt: skip
    for key, value in results.items():
        for s in STRATEGIES:
            v = value[s]
            print(f"{key} {s:14s} reached {v['reached']}/{v['runs']}  median {v['median_hours']} h  IQR {v['iqr_hours']}"
                  f"  films {v['median_films']}  devices {v['median_devices']}")  # fmt: skip
        print(f"{key} multifidelity / pce_only = {value['multifidelity_over_pce_only']}")
    print(f"checks: {checks}")
    t = timing_result
    print(f"planning time at {t['observations']} observations: {t['seconds']} s wall, {t['cpu_seconds']} s CPU "
          f"(botorch planner, one source, same n: {t['botorch_seconds_same_n']} s wall, {t['botorch_cpu_seconds_same_n']} s CPU)")
    print(f"wall {report['wall_s']} s, workers' CPU {report['cpu_s_workers']} s, load {load_before} -> {report['load_after']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
