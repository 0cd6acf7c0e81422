"""Pool benchmarks: replay a planner against a table of already measured materials.

The table is the pool: each "experiment" reveals one row's objective, without replacement. A run
starts from `init` random rows (the same rows for every planner at a given seed, so planners are
compared on equal footing), then asks the planner for one row at a time, passing the not yet
revealed rows as its candidate table, until the budget is spent. A run is a pure function of
(table, planner, options, seed), so runs can go to worker processes in any order and give the same
result as a serial loop.

Example:
    >>> inputs = ["x_A", "Z_mean", "X_pauling_mean", "X_pauling_absdiff", "period_mean", "group_mean",
    ...           "atomic_radius_mean", "IE1_mean", "EA_mean"]
    >>> pool = load_pool("protocols/data/melting_points.csv", inputs, "Tm_K", "max")
    >>> settings = BenchSettings(planners=("botorch", "random"), seeds=(0, 1), budget=12, init=4)
    >>> report = run_benchmark(pool, settings)
    >>> sorted(report["planners"]), len(report["planners"]["botorch"]["runs"])
    (['botorch', 'random'], 2)
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop.controller.offline.bench_metrics import summarize_pool, summarize_runs
from closedloop.controller.offline.executors import ExecutorSpec, configure_worker, run_jobs  # noqa: F401 - configure_worker re-exported
from closedloop.controller.offline.pool_inputs import UnusableInput, choose_inputs
from closedloop.planners.encoding import point_key
from closedloop.planners.registry import make_planner, planner_options
from closedloop.planners.sampling import derive_seed
from closedloop.planners.space import (
    ChoiceParameter,
    Conditions,
    FloatParameter,
    Objective,
    Observation,
    Parameter,
    Problem,
    SearchSpace,
)
from closedloop.version import __version__

DIRECTIONS = {"max": True, "maximize": True, "min": False, "minimize": False}
PACKAGES = ("torch", "botorch", "gpytorch", "numpy", "pandas", "scipy")


class BenchInputError(ValueError):
    """The table or the benchmark settings cannot be used; the message says what to change."""


@dataclass(frozen=True)
class PoolTable:
    """A lookup pool: one row per candidate, input columns plus one objective column."""

    path: str
    sha256: str
    table: pd.DataFrame  # input columns (numbers as floats, others as strings) + the objective
    inputs: tuple[str, ...]
    objective: str
    maximize: bool
    dropped: tuple[str, ...] = ()  # default columns left out, each "column (why)" (`pool_inputs.choose_inputs`)

    @property
    def size(self) -> int:
        return len(self.table)

    @property
    def values(self) -> list[float]:
        return self.table[self.objective].tolist()


@dataclass(frozen=True)
class BenchSettings:
    planners: tuple[str, ...]
    seeds: tuple[int, ...]
    budget: int  # trials per run, the `init` random rows included
    init: int  # random rows revealed before the planner is asked
    # Per planner, options for make_planner; `n_initial` defaults to 0 because the bench draws the initial rows.
    planner_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Above this many unrevealed rows, each step offers the planner a seeded random subset of this size.
    max_candidates: int | None = None


@dataclass(frozen=True)
class PoolRun:
    planner: str
    seed: int
    order: list[int]  # table rows in the order revealed: trial 1 first
    seconds: float
    fallbacks: int  # model steps where the planner fell back to a space-filling point
    first_fallback: str | None


def load_pool(path: str | Path, inputs: Sequence[str] | None, objective: str, direction: str) -> PoolTable:
    """Read a CSV pool; raise BenchInputError naming the file, column or row that is unusable.

    `inputs` None (or empty): every column but the objective that can inform a model
    (`pool_inputs.choose_inputs`); the ones left out are in `PoolTable.dropped`.
    """
    path = Path(path)
    if direction.lower() not in DIRECTIONS:
        raise BenchInputError(f"direction {direction!r} is not one of max, min (or maximize, minimize)")
    if not path.is_file():
        raise BenchInputError(f"{path}: no such file; give the path of a CSV table with a header row")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BenchInputError(f"{path}: not a readable CSV table ({error})") from None
    if objective not in table.columns:
        raise BenchInputError(f"{path}: no column(s) {[objective]}; the table has {list(table.columns)}")
    try:
        choice = choose_inputs(path, table, [c.strip() for c in inputs or () if c.strip()], objective)
    except UnusableInput as error:
        raise BenchInputError(str(error)) from None
    inputs = choice.inputs
    if not inputs:
        raise BenchInputError(f"{path}: no usable input column (left out: {', '.join(choice.dropped)}); pass --inputs")
    unknown = [c for c in [*inputs, objective] if c not in table.columns]
    if unknown:
        raise BenchInputError(f"{path}: no column(s) {unknown}; the table has {list(table.columns)}")
    if objective in inputs or len(set(inputs)) != len(inputs):
        raise BenchInputError(f"inputs {inputs} repeat a column or include the objective {objective!r}")
    if len(table) < 2:
        raise BenchInputError(f"{path}: the pool needs at least 2 rows, it has {len(table)}")
    table = table[[*inputs, objective]].copy()
    y = pd.to_numeric(table[objective], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(y.to_numpy(dtype=float)))
    if bad.size:
        raise BenchInputError(
            f"{path}: objective {objective!r} is not a finite number in {bad.size} row(s), first at data row "
            f"{bad[0] + 1} ({table[objective].iloc[bad[0]]!r}); drop those rows or pick another column"
        )
    table[objective] = y.astype(float)
    for column in inputs:
        if pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(table[column]):
            table[column] = table[column].astype(float)
            missing = np.flatnonzero(~np.isfinite(table[column].to_numpy()))
        else:
            missing = np.flatnonzero(table[column].isna().to_numpy())
            table[column] = table[column].astype(str)
        if missing.size:
            raise BenchInputError(
                f"{path}: input {column!r} is missing or not finite in {missing.size} row(s), first at data "
                f"row {missing[0] + 1}; fill or drop those rows"
            )
    duplicated = np.flatnonzero(table.duplicated(subset=inputs, keep=False).to_numpy())
    if duplicated.size:
        raise BenchInputError(
            f"{path}: {duplicated.size} rows share their inputs with another row (first at data rows "
            f"{', '.join(str(r + 1) for r in duplicated[:2])}); one pool row per input point is needed: "
            "average replicates first (e.g. the *_grouped_unique.csv tables) or add a distinguishing input"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PoolTable(str(path), digest, table.reset_index(drop=True), tuple(inputs), objective,
                     DIRECTIONS[direction.lower()], tuple(choice.dropped))


def pool_problem(pool: PoolTable) -> Problem:
    """Numbers become floats bounded by the column's min and max; anything else becomes a choice."""
    parameters: list[Parameter] = []
    for column in pool.inputs:
        series = pool.table[column]
        if pd.api.types.is_float_dtype(series):
            parameters.append(FloatParameter(column, float(series.min()), float(series.max())))
        else:
            parameters.append(ChoiceParameter(column, tuple(sorted(series.unique()))))
    return Problem(SearchSpace(tuple(parameters)), (Objective(pool.objective, maximize=pool.maximize),))


def check_settings(pool: PoolTable, settings: BenchSettings) -> None:
    """Raise BenchInputError for settings that cannot run on this pool."""
    if not settings.planners:
        raise BenchInputError("no planner given; pass e.g. --planners botorch,random")
    if not settings.seeds:
        raise BenchInputError("no seeds given; pass --seeds N with N >= 1")
    if not 1 <= settings.budget <= pool.size:
        raise BenchInputError(f"budget {settings.budget} must be between 1 and the pool size {pool.size}")
    if not 0 <= settings.init <= settings.budget:
        raise BenchInputError(f"init {settings.init} must be between 0 and the budget {settings.budget}")
    if settings.max_candidates is not None and settings.max_candidates < 1:
        raise BenchInputError(f"max_candidates must be a positive number, got {settings.max_candidates}")
    for name in settings.planners:
        try:
            make_planner(name, **_options(settings, name))
        except ValueError as error:
            raise BenchInputError(str(error)) from None


def run_pool(pool: PoolTable, planner_name: str, seed: int, settings: BenchSettings) -> PoolRun:
    """One run: `init` seeded random rows, then one planner proposal per trial up to the budget."""
    started = time.perf_counter()
    problem = pool_problem(pool)
    space = problem.space
    planner = make_planner(planner_name, **_options(settings, planner_name))
    candidates = pool.table[list(pool.inputs)]
    conditions: list[Conditions] = [{str(k): v for k, v in row.items()} for row in candidates.to_dict("records")]
    row_of = {point_key(space, c): row for row, c in enumerate(conditions)}
    values = pool.values
    initial_rng = np.random.default_rng(derive_seed(seed, "bench-initial"))
    order: list[int] = initial_rng.choice(pool.size, size=settings.init, replace=False).tolist()
    revealed = np.zeros(pool.size, dtype=bool)
    revealed[order] = True
    observations = [_observation(conditions[r], pool.objective, values[r]) for r in order]
    fallbacks, first_fallback = 0, None
    for trial in range(settings.init + 1, settings.budget + 1):
        offered = _offered_rows(revealed, settings.max_candidates, seed, trial)
        [proposal] = planner.propose(
            problem, observations, [], 1, seed=derive_seed(seed, "bench-step", str(trial)),
            candidates=candidates.iloc[offered],
        )
        row = row_of.get(point_key(space, proposal.conditions))
        if row is None or revealed[row]:
            raise RuntimeError(
                f"planner {planner_name!r} proposed {proposal.conditions}, which is "
                f"{'not a pool row' if row is None else 'already revealed'} (seed {seed}, trial {trial})"
            )
        if proposal.provenance.design == "fallback":
            fallbacks += 1
            first_fallback = first_fallback or proposal.provenance.fallback
        order.append(row)
        revealed[row] = True
        observations.append(_observation(conditions[row], pool.objective, values[row]))
    return PoolRun(planner_name, seed, order, time.perf_counter() - started, fallbacks, first_fallback)


def run_all(
    pool: PoolTable,
    settings: BenchSettings,
    workers: int = 1,
    on_run: Callable[[PoolRun], None] | None = None,
    executor: ExecutorSpec | None = None,
) -> list[PoolRun]:
    """Every (planner, seed) run, on `executor` (default: `workers` local processes, this process when 1);
    sorted by planner, then seed.

    Each worker (and the serial loop) uses one torch thread: runs are small, and one thread per
    process both uses two cores best and keeps the arithmetic identical between the two paths.
    """
    check_settings(pool, settings)
    tasks = [(pool, name, seed, settings) for name in settings.planners for seed in settings.seeds]
    runs: list[PoolRun] = []
    for _, run in run_jobs(_run_task, tasks, executor or ExecutorSpec("process", max(workers, 1))):
        runs.append(run)
        if on_run:
            on_run(run)
    rank = {name: i for i, name in enumerate(settings.planners)}
    return sorted(runs, key=lambda r: (rank[r.planner], r.seed))


def run_benchmark(
    pool: PoolTable,
    settings: BenchSettings,
    tolerance: float = 0.0,
    workers: int = 1,
    on_run: Callable[[PoolRun], None] | None = None,
    executor: ExecutorSpec | None = None,
) -> dict[str, Any]:
    """Run every planner and seed and return the JSON-ready report (see `report`)."""
    started = time.perf_counter()
    runs = run_all(pool, settings, workers, on_run, executor)
    return report(pool, settings, runs, tolerance, workers, time.perf_counter() - started)


def report(
    pool: PoolTable,
    settings: BenchSettings,
    runs: Sequence[PoolRun],
    tolerance: float,
    workers: int,
    wall_time_s: float,
) -> dict[str, Any]:
    """Dataset identity, settings, the analytic random baseline, per-planner metrics, software, machine."""
    pool_summary = summarize_pool(pool.values, pool.maximize, tolerance, settings.budget)
    planners = {}
    for name in settings.planners:
        own = [r for r in runs if r.planner == name]
        planners[name] = summarize_runs(pool.values, pool.maximize, tolerance, settings.budget, [r.order for r in own])
        planners[name]["options"] = _options(settings, name)
        planners[name]["runs"] = [
            {k: v for k, v in asdict(r).items() if k != "planner"} for r in own
        ]
    return {
        "benchmark": "pool",
        "dataset": {
            "path": pool.path,
            "sha256": pool.sha256,
            "pool_size": pool.size,
            "inputs": list(pool.inputs),
            "dropped_inputs": list(pool.dropped),
            "objective": pool.objective,
            "direction": "max" if pool.maximize else "min",
            **pool_summary["dataset"],
        },
        "settings": {
            "budget": settings.budget,
            "seeds": list(settings.seeds),
            "init": settings.init,
            "init_design": "uniform random rows, the same for every planner at a given seed",
            "tolerance": tolerance,
            "max_candidates": settings.max_candidates,
            "candidates_per_step": _candidate_rule(settings.max_candidates),
            "workers": workers,
        },
        "random_baseline": pool_summary["random"],
        "planners": planners,
        "wall_time_s": wall_time_s,
        "software": software_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()},
    }


def rebuild_report(previous: dict[str, Any], pool: PoolTable) -> dict[str, Any]:
    """Recompute a report's metrics from the revealed orders it stores (e.g. after a metric was added),
    without re-running any planner. `pool` must be the same table (checked by its sha256)."""
    if previous["dataset"]["sha256"] != pool.sha256:
        raise BenchInputError(f"{pool.path} changed since the report was made (sha256 differs); re-run the benchmark")
    stored = previous["settings"]
    planners = previous["planners"]
    settings = BenchSettings(
        planners=tuple(planners),
        seeds=tuple(stored["seeds"]),
        budget=stored["budget"],
        init=stored["init"],
        planner_options={name: p["options"] for name, p in planners.items()},
        max_candidates=stored.get("max_candidates"),
    )
    runs = [
        PoolRun(name, r["seed"], r["order"], r["seconds"], r["fallbacks"], r["first_fallback"])
        for name, p in planners.items()
        for r in p["runs"]
    ]
    rebuilt = report(pool, settings, runs, stored["tolerance"], stored["workers"], previous["wall_time_s"])
    # The runs were measured with the software and on the machine of the original report.
    rebuilt["software"], rebuilt["machine"] = previous["software"], previous["machine"]
    return rebuilt


def _run_task(task: tuple[PoolTable, str, int, BenchSettings]) -> PoolRun:
    """One (pool, planner, seed, settings) run: the job an executor runs."""
    return run_pool(*task)


def software_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Python's, closedloop's and each of `packages`' installed version ("not installed" if absent)."""
    versions = {"python": sys.version.split()[0], "closedloop": __version__}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _options(settings: BenchSettings, name: str) -> dict[str, Any]:
    options = dict(settings.planner_options.get(name, {}))
    if "n_initial" in planner_options(name):
        options.setdefault("n_initial", 0)
    return options


def _offered_rows(revealed: np.ndarray, max_candidates: int | None, seed: int, trial: int) -> np.ndarray:
    """The unrevealed rows, or a seeded random subset of them, in table order."""
    rows = np.flatnonzero(~revealed)
    if max_candidates is None or rows.size <= max_candidates:
        return rows
    rng = np.random.default_rng(derive_seed(seed, "bench-candidates", str(trial)))
    return np.sort(rng.choice(rows, size=max_candidates, replace=False))


def _candidate_rule(max_candidates: int | None) -> str:
    if max_candidates is None:
        return "all unrevealed rows"
    return (
        f"all unrevealed rows while at most {max_candidates}; beyond, a seeded uniform random subset of "
        f"{max_candidates} of them, drawn afresh each trial"
    )


def _observation(conditions: Conditions, objective: str, value: float) -> Observation:
    return Observation(conditions=dict(conditions), values={objective: value})
