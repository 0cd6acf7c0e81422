"""The peer harness (benchmarks/peers) on its own tools: shared designs and noise, pools, the report.

Ax and BayBE are a benchmark extra, not installed for the tests; their adapters are exercised by the
benchmark run itself. closedloop, raw BoTorch and random run here for real."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from benchmarks.peers.catalog import PROBLEMS, levy, mixed_optimum, mixed_truth, problem
from benchmarks.peers.harness import regret_curve, run_one, trials_to
from benchmarks.peers.problems import BenchProblem, Param, Pool
from benchmarks.peers.report import markdown, summarize


def small(name: str, evaluations: int) -> BenchProblem:
    return replace(problem(name), evaluations=evaluations)


def test_every_tool_starts_from_the_same_design_and_noise_draws() -> None:
    branin = small("branin", 7)
    runs = {tool: run_one(branin, tool, seed=3) for tool in ("random", "closedloop")}
    for run in runs.values():
        assert run.error is None
        assert len(run.points) == 7
    first = [r.points[:5] for r in runs.values()]
    assert first[0] == first[1] == branin.initial_design(3)
    # The i-th measurement of a seed is the same draw whichever tool asked for which point.
    x = runs["random"].points[6]
    assert branin.measure(x, 3, 6) == branin.measure(x, 3, 6)
    noisy = small("hartmann6_noise0.05_q1", 9)
    value = noisy.measure({f"x{i}": 0.5 for i in range(1, 7)}, 3, 6)
    assert value is not None and value != noisy.truth({f"x{i}": 0.5 for i in range(1, 7)})
    assert noisy.initial_design(3) != noisy.initial_design(4)


def test_a_constrained_mixed_design_keeps_its_constraint_and_the_optimum_is_reached_by_none() -> None:
    mixed = problem("mixed_categorical_constraint")
    for x in mixed.initial_design(0):
        assert float(x["x1"]) + float(x["x2"]) <= 1.0 + 1e-9
        assert x["catalyst"] in ("A", "B", "C") and x["solvent"] in ("P", "Q")
    best = mixed_optimum()
    assert all(mixed_truth(x) <= best + 1e-9 for x in mixed.initial_design(0))
    assert levy(np.ones(10)) == pytest.approx(0.0, abs=1e-12)


def test_a_pool_run_reveals_distinct_rows_and_scores_trials_to_the_best_row() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.random(20), "b": rng.random(20)})
    table["y"] = -((table["a"] - 0.3) ** 2) - (table["b"] - 0.6) ** 2
    pool = Pool(table, ("a", "b"), "y")
    values = dict(zip(pool.rows_by_key(), table["y"], strict=True))
    bench = BenchProblem(
        name="toy_pool", description="toy", params=(Param("a", "float"), Param("b", "float")), maximize=True,
        truth=lambda x: float(values[pool.key(x)]), optimum=float(table["y"].max()), evaluations=20, n_initial=3,
        pool=pool, metric="trials_to_best",
    )
    for tool in ("random", "botorch", "closedloop"):
        run = run_one(bench, tool, seed=1)
        assert run.error is None, run.error
        keys = {pool.key(x) for x in run.points}
        assert len(keys) == 20  # the whole pool, each row once
        found = trials_to(bench, run.as_json(), 0.0)
        assert found is not None and 1 <= found <= 20
        assert run.points[found - 1] == max(run.points, key=lambda x: values[pool.key(x)])


def test_the_report_pairs_seeds_and_names_the_best_peer() -> None:
    branin = small("branin", 7)
    runs = [run_one(branin, tool, seed).as_json() for tool in ("random", "botorch", "closedloop") for seed in (0, 1)]
    summary = summarize(branin, runs, 0.0)
    tools = summary["tools"]
    assert list(tools) == ["closedloop", "botorch", "random"]
    for name, entry in tools.items():
        curves = [regret_curve(branin, r) for r in runs if r["tool"] == name]
        assert entry["score_by_seed"] == [pytest.approx(c[-1], rel=1e-3) for c in curves]
        assert all(a >= b for c in curves for a, b in zip(c, c[1:], strict=False))  # never gets worse
    assert summary["verdict"]["best_peer"] == "botorch"
    paired = summary["paired"]["random"]
    assert paired["wins"] + paired["ties"] + paired["losses"] == 2
    table = markdown([{"problem": "branin", "score": "regret", "summary": summary}])
    assert "| branin | regret |" in table and "**" in table


def test_every_catalogued_problem_builds_and_its_optimum_bounds_its_design() -> None:
    for name in PROBLEMS:
        if name.startswith("pool_"):
            continue  # read from ../shared/data; the pool test above covers pools
        bench = problem(name)
        for x in bench.initial_design(0):
            truth = bench.truth(x)
            if truth is not None:
                assert (truth <= bench.optimum + 1e-6) if bench.maximize else (truth >= bench.optimum - 1e-6), name
        assert math.isfinite(bench.optimum)
