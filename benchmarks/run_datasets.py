"""Pool benchmarks on the real datasets in /work/shared/data, against the targets of issue 4.

Usage: python benchmarks/run_datasets.py [--only NAME ...] [--seeds 20] [--workers 2] [--force]
Writes benchmarks/results/bench_<name>.json (the full `closedloop bench` report) per dataset, a
bench_<name>.partial.json while a dataset is running (finished runs only, so a killed job loses
little), and bench_summary.json: per dataset the target, the measured number and whether it is met.
Datasets whose result file exists are skipped unless --force; --rebuild recomputes the metrics of
existing result files from the revealed orders they store, without re-running any planner.

Every dataset uses the same planner settings (PLANNER_OPTIONS); nothing is tuned per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.controller.offline.pool_bench import (  # noqa: E402
    BenchSettings,
    PoolRun,
    load_pool,
    rebuild_report,
    report,
    run_all,
)

DATA = Path(os.environ.get("CLOSEDLOOP_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"
LIANG = DATA / "liang2021_benchmarking"

# One configuration for every dataset: Yeo-Johnson-warped objective (skewed tables with outliers),
# ARD Matern-5/2 with Gamma priors, analytic LogEI (one proposal per trial, so no batch to coordinate).
# Tried on Perovskite and AutoAM (6-8 seeds, 2026-11-22) and each worse on at least one of them:
# kernel rbf, no warp, qLogNEI instead of analytic LogEI, Matern without an output scale, and
# predictive_ei (Perovskite AF 1.47 -> 1.57, AutoAM 2.50 -> 1.92).
PLANNER_OPTIONS: dict[str, dict[str, Any]] = {
    "botorch": {"power_transform": True, "kernel": "matern52", "analytic_ei": True}
}

# Elemental descriptors for the melting-point pool, chosen before looking at results: the
# composition-weighted mean and the A-B difference of electronegativity and atomic radius (bond
# ionicity, bond length), the mean period, the mean and difference of group (valence), plus the
# stoichiometry. Sums and products repeat the same information; mass, Z, IE1 and EA are left out to
# keep the GP at 8 dimensions for 248 rows.
MELTING_INPUTS = [
    "x_A",
    "X_pauling_mean", "X_pauling_absdiff",
    "atomic_radius_mean", "atomic_radius_absdiff",
    "period_mean",
    "group_mean", "group_absdiff",
]


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    inputs: list[str]
    objective: str
    direction: str
    budget: int
    init: int
    goal: str  # the metric of the report's botorch entry that the issue sets a bound on
    bound: float
    at_most: bool  # True: the metric must be <= bound; False: >= bound
    tolerance: float = 0.0
    planners: tuple[str, ...] = ("botorch", "random")
    max_candidates: int | None = None
    note: str = ""


def _liang(name: str, inputs: list[str], objective: str, direction: str, budget: int) -> Target:
    return Target(
        f"liang_{name.lower()}", LIANG / f"{name}_grouped_unique.csv", inputs, objective, direction,
        budget, init=2, goal="acceleration_factor_at_half", bound=3.0, at_most=False,
        note="Liang et al. 2021 protocol: 2 random initial rows, AF vs analytic random at 50 % of the top 5 %",
    )


TARGETS = [
    Target(
        "cu_grain_boundary", DATA / "physbo_cu_gb_s5_210" / "s5-210.csv", ["dx", "gb", "dz"], "gb_energy",
        "min", budget=100, init=20, goal="median_trials_to_best", bound=69, at_most=True, tolerance=1e-4,
        planners=("botorch",),
        note="Kiyohara et al. 2016: global minimum in 69 trials incl. 20 random; random planner runs are "
        "replaced by the exact analytic baseline (1,635 expected, median 1,204 trials to hit one of the 10 rows "
        "within 1e-4 J/m^2)",
    ),
    Target(
        "melting_points", DATA / "seko2014_melting_temps" / "seko_melting_with_elemental_descriptors.csv",
        MELTING_INPUTS, "Tm_K", "max", budget=60, init=2, goal="median_trials_to_best", bound=16, at_most=True,
        note="Seko et al. 2014 report 16.1 vs 133.4 trials (unverified); our descriptors are elemental, not "
        "the paper's DFT ones. Best = AlN (3273 K), unique: the runner-up SiC (3103 K) is 170 K below it, so "
        "no sensible tolerance merges them (SiC and MgO are the pair 5 K apart); top-5 reported too.",
    ),
    _liang("Crossed_barrel", ["n", "theta", "r", "t"], "toughness", "max", budget=150),
    _liang("Perovskite", ["CsPbI", "FAPbI", "MAPbI"], "Instability index", "min", budget=60),
    _liang("AgNP", ["QAgNO3(%)", "Qpva(%)", "Qtsc(%)", "Qseed(%)", "Qtot(uL/min)"], "loss", "min", budget=90),
    _liang(
        "P3HT",
        ["P3HT content (%)", "D1 content (%)", "D2 content (%)", "D6 content (%)", "D8 content (%)"],
        "Conductivity (measured) (S/cm)", "max", budget=90,
    ),
    _liang(
        "AutoAM", ["Prime Delay", "Print Speed", "X Offset Correction", "Y Offset Correction"], "Score", "max",
        budget=60,
    ),
]


def run_target(target: Target, seeds: int, workers: int) -> dict[str, Any]:
    pool = load_pool(target.path, target.inputs, target.objective, target.direction)
    settings = BenchSettings(
        planners=target.planners,
        seeds=tuple(range(seeds)),
        budget=target.budget,
        init=target.init,
        planner_options={k: v for k, v in PLANNER_OPTIONS.items() if k in target.planners},
        max_candidates=target.max_candidates,
    )
    partial_path = RESULTS / f"bench_{target.name}.partial.json"
    finished: list[PoolRun] = []

    def save_partial(run: PoolRun) -> None:
        finished.append(run)
        print(f"  {target.name}: {run.planner} seed {run.seed} done in {run.seconds:.0f} s", flush=True)
        runs = [{"planner": r.planner, "seed": r.seed, "order": r.order, "seconds": r.seconds} for r in finished]
        partial_path.write_text(json.dumps({"target": target.name, "finished_runs": runs}) + "\n")

    started = time.perf_counter()
    runs = run_all(pool, settings, workers, save_partial)
    result = report(pool, settings, runs, target.tolerance, workers, time.perf_counter() - started)
    result["target"] = verdict(target, result)
    (RESULTS / f"bench_{target.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    partial_path.unlink(missing_ok=True)
    return result


def verdict(target: Target, result: dict[str, Any]) -> dict[str, Any]:
    """The issue's bound, the measured value of the botorch planner and whether the bound is met."""
    measured = result["planners"]["botorch"][target.goal]
    met = measured is not None and (measured <= target.bound if target.at_most else measured >= target.bound)
    return {
        "metric": target.goal,
        "bound": f"{'<=' if target.at_most else '>='} {target.bound:g}",
        "measured": measured,
        "met": met,
        "note": target.note,
    }


def write_summary() -> None:
    summary = {}
    for target in TARGETS:
        path = RESULTS / f"bench_{target.name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        planners = result["planners"]
        summary[target.name] = {
            **result["target"],
            "seeds": len(result["settings"]["seeds"]),
            "budget": result["settings"]["budget"],
            "init": result["settings"]["init"],
            "per_planner": {
                name: {
                    "median_trials_to_best": p["median_trials_to_best"],
                    "found_best": f"{p['found_best']}/{len(p['trials_to_best'])}",
                    "median_trials_to_top5": p["median_trials_to_top5"],
                    "acceleration_factor_at_half": p["acceleration_factor_at_half"],
                    "enhancement_factor_at_half": p["enhancement_factor_at_half"],
                }
                for name, p in planners.items()
            },
            "random_expected_trials_to_best": result["random_baseline"]["expected_trials_to_best"],
            "wall_time_s": result["wall_time_s"],
        }
    (RESULTS / "bench_summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help=f"targets: {[t.name for t in TARGETS]}")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--force", action="store_true", help="re-run targets that already have results")
    parser.add_argument(
        "--rebuild", action="store_true", help="recompute metrics of existing results from their stored runs"
    )
    args = parser.parse_args()
    unknown = set(args.only or []) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; choose from {[t.name for t in TARGETS]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        if args.only is not None and target.name not in args.only:
            continue
        path = RESULTS / f"bench_{target.name}.json"
        if args.rebuild:
            if path.exists():
                pool = load_pool(target.path, target.inputs, target.objective, target.direction)
                result = rebuild_report(json.loads(path.read_text()), pool)
                result["target"] = verdict(target, result)
                path.write_text(json.dumps(result, indent=1) + "\n")
                print(f"{target.name}: rebuilt: {result['target']}")
            continue
        if path.exists() and not args.force:
            print(f"{target.name}: result exists, skipped (use --force)")
            continue
        print(f"{target.name}: {args.seeds} seeds, budget {target.budget}", flush=True)
        result = run_target(target, args.seeds, args.workers)
        print(f"{target.name}: {result['target']}", flush=True)
        write_summary()
    write_summary()


if __name__ == "__main__":
    main()
