"""Pool benchmarks: metrics against hand-computed values, a real run through the CLI, serial == parallel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from closedloop.controller.cli.bench import bench
from closedloop.controller.offline.bench_metrics import (
    acceleration_curve,
    acceleration_factor,
    censored_median,
    enhancement_at,
    enhancement_curve,
    first_trial_in,
    found_fraction_curve,
    mean_curve,
    random_expected_first,
    random_fraction_curve,
    random_median_first,
    random_trials_to_reach,
    ranking,
    rows_within,
    top_rows,
    trials_to_reach,
)
from closedloop.controller.offline.pool_bench import (
    BenchSettings,
    load_pool,
    pool_problem,
    rebuild_report,
    run_all,
)
from closedloop.planners.outcomes import Outcome
from closedloop.planners.registry import make_planner
from closedloop.planners.space import Observation, Problem
from closedloop.planners.warping import PowerWarp


def test_ranking_and_top_set_follow_the_direction_and_keep_table_order_on_ties() -> None:
    assert ranking([3.0, 1.0, 2.0, 3.0], maximize=True) == [0, 3, 2, 1]
    assert ranking([3.0, 1.0, 2.0, 3.0], maximize=False) == [1, 2, 0, 3]
    assert top_rows(list(range(20)), maximize=True) == [19]  # ceil(0.05 * 20) = 1
    assert top_rows(list(range(21)), maximize=False) == [0, 1]  # ceil(0.05 * 21) = 2
    assert len(top_rows(list(range(600)), maximize=True)) == 30  # the paper's Crossed barrel n_top


def test_rows_within_tolerance_count_as_the_best() -> None:
    values = [1.00005, 1.0, 2.0, 1.0002]
    assert rows_within(values, maximize=False, tolerance=1e-4) == [0, 1]
    assert rows_within(values, maximize=False, tolerance=0.0) == [1]
    assert rows_within([5.0, 4.99, 3.0], maximize=True, tolerance=0.02) == [0, 1]
    with pytest.raises(ValueError, match="tolerance"):
        rows_within(values, maximize=True, tolerance=-1.0)


def test_trials_and_found_fraction_curve_by_hand() -> None:
    assert first_trial_in([4, 2, 7], [7, 9]) == 3
    assert first_trial_in([4, 2, 7], [9]) is None
    assert found_fraction_curve([5, 1, 3], [1, 3], budget=4) == [0.0, 0.5, 1.0, 1.0]
    assert mean_curve([[0.0, 0.5], [1.0, 1.0]]) == [0.5, 0.75]
    assert trials_to_reach([0.0, 0.5, 1.0], 0.5) == 2
    assert trials_to_reach([0.0, 0.25], 0.5) is None


def test_random_baseline_is_the_exact_expectation_of_sampling_without_replacement() -> None:
    assert random_fraction_curve(4, 3) == [0.25, 0.5, 0.75]
    assert random_expected_first(248, 1) == 124.5  # (N + 1) / 2
    assert random_expected_first(248, 5) == 41.5  # (N + 1) / 6
    assert random_median_first(248, 1) == 124  # P(not yet after t draws) = (248 - t) / 248
    assert random_median_first(248, 5) == 32  # checked with exact fractions
    assert random_median_first(4, 1) == 2
    assert random_trials_to_reach(600, 0.5) == 300
    assert random_trials_to_reach(94, 0.6) == 57  # ceil(56.4)


def test_enhancement_and_acceleration_factors_by_hand() -> None:
    curve = [0.0, 0.5, 1.0]  # pool of 10: random finds 10 %, 20 %, 30 % in expectation
    assert enhancement_curve(curve, 10) == pytest.approx([0.0, 2.5, 1.0 / 0.3])
    assert enhancement_at(curve, 10, 0.5) == pytest.approx(2.5)
    assert acceleration_factor(curve, 10, 0.5) == pytest.approx(2.5)  # random needs 5 trials, planner 2
    assert acceleration_factor(curve, 10, 1.0) == pytest.approx(10 / 3)
    assert acceleration_factor([0.0, 0.25], 10, 0.5) is None
    steps = acceleration_curve(curve, 10, top_count=2)
    assert [s["trials"] for s in steps] == [2, 3]
    assert [s["random_trials"] for s in steps] == [5, 10]


def test_censored_median_treats_not_found_as_later_than_any_trial() -> None:
    assert censored_median([3, None, 5]) == 5
    assert censored_median([1, 2, 3, 4]) == 2.5
    assert censored_median([3, None, None]) is None
    assert censored_median([2, None]) is None
    assert censored_median([]) is None


def _write_pool(path: Path, rows: int = 48) -> Path:
    """A smooth 2-D response on a grid, plus a categorical input that shifts it."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, rows)
    t = rng.uniform(0, 1, rows)
    solvent = np.where(np.arange(rows) % 2 == 0, "toluene", "water")
    y = -((x - 0.3) ** 2) - (t - 0.7) ** 2 + np.where(solvent == "toluene", 0.05, 0.0)
    pd.DataFrame({"x": x, "temp": t, "solvent": solvent, "note": "n/a", "yield": y}).to_csv(path, index=False)
    return path


def test_random_planner_matches_the_analytic_baseline(tmp_path: Path) -> None:
    pool = load_pool(_write_pool(tmp_path / "pool.csv", rows=20), ["x", "temp", "solvent"], "yield", "max")
    settings = BenchSettings(planners=("random",), seeds=tuple(range(120)), budget=10, init=2)
    runs = run_all(pool, settings)
    best = ranking(pool.values, maximize=True)[0]
    found_by_half = np.mean([best in r.order for r in runs])
    # Expected 10 / 20 = 0.5; with 120 runs the standard error is about 0.046.
    assert abs(found_by_half - 0.5) < 0.15
    assert all(len(set(r.order)) == 10 for r in runs)


def test_cli_pool_run_end_to_end_writes_a_consistent_report(tmp_path: Path) -> None:
    csv = _write_pool(tmp_path / "pool.csv")
    out = tmp_path / "report" / "bench.json"
    result = CliRunner().invoke(
        bench,
        [str(csv), "--inputs", "x,temp,solvent", "--objective", "yield", "--direction", "max",
         "--planners", "botorch,random", "--seeds", "2", "--budget", "10", "--init", "3",
         "--workers", "1", "--max-candidates", "30", "--json", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "botorch" in result.output and "AF@50%" in result.output
    report = json.loads(out.read_text())
    assert report["dataset"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert report["dataset"]["pool_size"] == 48 and report["dataset"]["top_count"] == 3
    assert report["settings"]["budget"] == 10 and report["settings"]["seeds"] == [0, 1]
    assert "30" in report["settings"]["candidates_per_step"]
    assert report["machine"]["cpu_count"] >= 1 and report["software"]["botorch"]
    values = pd.read_csv(csv)["yield"].tolist()
    best_row = int(np.argmax(values))
    top = set(ranking(values, maximize=True)[:3])
    initial = {}
    for name in ("botorch", "random"):
        summary = report["planners"][name]
        orders = [run["order"] for run in summary["runs"]]
        assert all(len(o) == 10 and len(set(o)) == 10 and all(0 <= r < 48 for r in o) for o in orders)
        # Every number in the report is re-derivable from the revealed orders.
        expected = [o.index(best_row) + 1 if best_row in o else None for o in orders]
        assert summary["trials_to_best"] == expected
        curve = np.mean([[len(top & set(o[: i + 1])) / 3 for i in range(10)] for o in orders], axis=0)
        assert summary["top_fraction_curve"] == pytest.approx(curve.tolist())
        assert summary["enhancement_factor_curve"][-1] == pytest.approx(curve[-1] / (10 / 48))
        initial[name] = [o[:3] for o in orders]
    assert initial["botorch"] == initial["random"]  # common random initial rows per seed
    assert report["random_baseline"]["expected_trials_to_best"] == pytest.approx(49 / 2)
    assert report["random_baseline"]["median_trials_to_best"] == 24
    # Metrics can be recomputed from the stored orders alone, and come out the same.
    rebuilt = rebuild_report(report, load_pool(csv, ["x", "temp", "solvent"], "yield", "max"))
    assert json.loads(json.dumps(rebuilt)) == report


@pytest.mark.slow
def test_parallel_and_serial_runs_are_identical(tmp_path: Path) -> None:
    pool = load_pool(_write_pool(tmp_path / "pool.csv", rows=40), ["x", "temp", "solvent"], "yield", "max")
    settings = BenchSettings(planners=("botorch", "random"), seeds=(0, 1), budget=8, init=3)
    serial = run_all(pool, settings, workers=1)
    parallel = run_all(pool, settings, workers=2)
    assert [(r.planner, r.seed, r.order) for r in serial] == [(r.planner, r.seed, r.order) for r in parallel]
    assert len({tuple(r.order) for r in serial}) == 4  # seeds and planners really differ
    assert all(r.fallbacks == 0 for r in serial)


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(bench, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "missing.csv"}, "no such file"),
        ({"--inputs": "x,pressure"}, "pressure"),
        ({"--objective": "purity"}, "purity"),
        ({"--direction": "up"}, "'up' is not one of"),
        ({"--planners": "botorch,magic"}, "unknown planner 'magic'"),
        ({"--budget": "500"}, "pool size 48"),
        ({"--init": "20", "--budget": "10"}, "init 20"),
        ({"--inputs": "solvent"}, "share their inputs"),
        ({"--option": "botorch.colour=3"}, "no option(s) ['colour']"),
        ({"--tolerance": "-1"}, "--tolerance"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(tmp_path: Path, change: dict[str, str], message: str) -> None:
    csv = _write_pool(tmp_path / "pool.csv")
    options = {"--inputs": "x,temp,solvent", "--objective": "yield", "--direction": "max",
               "--budget": "10", "--seeds": "1", "--workers": "1"}
    dataset = str(tmp_path / change.pop("dataset")) if "dataset" in change else str(csv)
    options.update(change)
    code, output = _invoke([dataset, *[part for pair in options.items() for part in pair]])
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output


def test_non_numeric_objective_is_rejected_with_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, "oops", 3.0]}).to_csv(path, index=False)
    code, output = _invoke([str(path), "--inputs", "x", "--objective", "y", "--direction", "min", "--budget", "2"])
    assert code == 2
    assert "data row 2" in output and "'oops'" in output


# The planner options the dataset benchmarks use (planners/warping.py, models.py, acquisition.py).


def test_power_warp_is_increasing_and_pulls_outliers_in() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(1.0, 0.05, 40), [2.9, 2.5]])  # a bulk plus two far outliers
    warp = PowerWarp.fit(values.tolist())
    assert warp is not None
    grid = np.linspace(values.min() - 1, values.max() + 1, 400)
    warped = np.array([warp(float(v)) for v in grid])
    assert np.all(np.diff(warped) > 0)
    raw_z = (values.max() - values.mean()) / values.std()
    w = np.array([warp(float(v)) for v in values])
    assert (w.max() - w.mean()) / w.std() < 0.6 * raw_z  # 4.9 standard deviations out before, 2.5 after
    assert PowerWarp.fit([1.0, 1.0, 1.0, 1.0]) is None and PowerWarp.fit([1.0, 2.0]) is None


def test_warped_outcome_keeps_bounds_consistent() -> None:
    outcome = Outcome("y", sign=-1.0, warp=PowerWarp(center=-1.0, scale=0.1, lmbda=3.0))
    op, bound = outcome.bound_to_model("<=", 1.2)
    for y in (0.9, 1.1, 1.2, 1.3, 2.5):
        in_model = outcome.to_model(y) >= bound if op == ">=" else outcome.to_model(y) <= bound
        assert in_model == (y <= 1.2)


def _pool_problem(tmp_path: Path) -> tuple[Problem, pd.DataFrame, list[Observation]]:
    pool = load_pool(_write_pool(tmp_path / "pool.csv", rows=40), ["x", "temp", "solvent"], "yield", "max")
    problem = pool_problem(pool)
    table = pool.table[list(pool.inputs)]
    observed = [
        Observation(table.iloc[i].to_dict(), {"yield": pool.values[i]}) for i in range(8)
    ]
    return problem, table, observed


def test_planner_options_used_by_the_benchmarks(tmp_path: Path) -> None:
    problem, table, observed = _pool_problem(tmp_path)
    planner = make_planner("botorch", n_initial=0, power_transform=True, kernel="matern52", analytic_ei=True)
    [proposal] = planner.propose(problem, observed, [], 1, seed=5, candidates=table)
    provenance = proposal.provenance
    assert provenance.design == "model" and provenance.fallback is None
    assert provenance.acquisition == "LogExpectedImprovement"
    assert any("power-warped" in note for note in provenance.notes)
    assert len(provenance.hyperparameters["yield"]["lengthscale"]) == 4  # ARD: x, temp, 2 one-hot
    seen = {tuple(o.conditions.values()) for o in observed}
    assert tuple(proposal.conditions.values()) not in seen
    assert proposal.conditions in table.to_dict("records")
    # With a point pending (or a batch), the joint Monte-Carlo acquisition is still used.
    [batched] = planner.propose(problem, observed, [table.iloc[20].to_dict()], 1, seed=5, candidates=table)
    assert batched.provenance.acquisition == "qLogNoisyExpectedImprovement"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"kernel": "cubic"}, "unknown kernel 'cubic'"), ({"power_transform": "yes"}, "power_transform"),
     ({"analytic_ei": 1}, "analytic_ei")],
)
def test_bad_planner_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_planner("botorch", **options)
