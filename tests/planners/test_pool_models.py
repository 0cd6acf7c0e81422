"""The botorch planner over pools: informative columns, the random-forest surrogate, its automatic choice,
and the screen that keeps noisy EI over large pools fast. Real fits on small real-shaped tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from closedloop.planners.botorch_planner import BotorchPlanner
from closedloop.planners.columns import informative_columns
from closedloop.planners.forest import ACQUISITION as FOREST
from closedloop.planners.forest import forest_scores
from closedloop.planners.outcomes import NoUsableData
from closedloop.planners.space import (
    ChoiceParameter,
    FloatParameter,
    Objective,
    Observation,
    Problem,
    SearchSpace,
)
from closedloop.planners.surrogate_choice import FOREST_MIN_COLUMNS


def descriptor_table(rows: int, informative: int, noise: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Columns d0.. of which the first `informative` set y, plus noise columns, copies and constants."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(rows, informative + noise)).round(6)
    table = pd.DataFrame(X, columns=[f"d{i}" for i in range(X.shape[1])])
    table["twice_d0"] = 2 * table["d0"] + 1  # a copy up to scale
    table["minus_d1"] = 5 - 3 * table["d1"]  # a mirrored copy
    table["const"] = 7.0
    y = -((X[:, :informative] - 0.6) ** 2).sum(axis=1)
    return table, y


def pool_problem(table: pd.DataFrame) -> Problem:
    space = SearchSpace(tuple(FloatParameter(c, float(table[c].min()), float(table[c].max())) for c in table.columns))
    return Problem(space, (Objective("y"),))


def observe(table: pd.DataFrame, y: np.ndarray, rows: list[int]) -> list[Observation]:
    return [Observation({c: float(table[c].iloc[r]) for c in table.columns}, {"y": float(y[r])}) for r in rows]


def row_of(table: pd.DataFrame, conditions: dict) -> int:
    match = np.flatnonzero((table[list(conditions)] == pd.Series(conditions)).all(axis=1).to_numpy())
    assert match.size == 1
    return int(match[0])


def test_constant_and_duplicated_columns_are_found_with_their_labels() -> None:
    a = torch.linspace(0, 1, 9)
    X = torch.stack([a, torch.full_like(a, 0.3), 1 - a, a**2, a, torch.rand(9, generator=torch.Generator().manual_seed(0))], dim=1)
    selection = informative_columns(X, ["a", "c", "mirror", "square", "copy", "noise"])
    assert selection.keep == [0, 3, 5]
    assert selection.constant == ["c"]
    assert selection.duplicates == [("mirror", "a"), ("copy", "a")]
    assert selection.groups([[0], [1], [2, 3], [4], [5]]) == [[0], [1], [2]]
    with pytest.raises(NoUsableData, match="every input column is constant"):
        informative_columns(torch.ones(4, 2), ["p", "q"])


def test_the_gp_models_only_informative_pool_columns_and_says_which_were_dropped() -> None:
    table, y = descriptor_table(200, informative=2, noise=1)
    problem = pool_problem(table)
    [proposal] = BotorchPlanner(n_initial=0, surrogate="gp").propose(
        problem, observe(table, y, list(range(12))), [], 1, seed=1, candidates=table
    )
    notes = " | ".join(proposal.provenance.notes)
    assert "1 input column(s) constant over the pool and the data left out: const" in notes
    assert "twice_d0 (= d0)" in notes and "minus_d1 (= d1)" in notes
    assert "surrogate: GP (option surrogate=gp)" in notes
    # One lengthscale per kept column: d0, d1, d2.
    [lengthscales] = [v["lengthscale"] for v in proposal.provenance.hyperparameters.values()][:1]
    assert len(lengthscales) == 3
    assert row_of(table, proposal.conditions) >= 12


def test_the_forest_proposes_an_unseen_row_reproducibly_and_records_itself() -> None:
    table, y = descriptor_table(300, informative=3, noise=30)
    problem = pool_problem(table)
    seen = list(range(0, 300, 10))
    planner = BotorchPlanner(n_initial=0, surrogate="forest")
    picks = [planner.propose(problem, observe(table, y, seen), [], 1, seed=s, candidates=table)[0] for s in (3, 3, 4)]
    rows = [row_of(table, p.conditions) for p in picks]
    assert rows[0] == rows[1] and rows[0] not in seen
    provenance = picks[0].provenance
    assert provenance.design == "model" and provenance.acquisition == FOREST
    assert provenance.acquisition_settings["n_trees"] > 0 and provenance.acquisition_value is not None
    assert "surrogate: random forest (option surrogate=forest)" in provenance.notes
    assert rows[2] not in seen


def test_the_forest_learns_which_descriptors_matter() -> None:
    table, y = descriptor_table(400, informative=2, noise=40)
    seen = list(range(0, 400, 5))
    unseen = np.delete(np.arange(400), seen)
    X = table.to_numpy()
    scores = forest_scores(X[seen], y[seen], X[unseen], seed=0)
    # The trees' mean ranks the unseen rows as the truth does, despite 40 noise columns.
    assert np.corrcoef(np.argsort(np.argsort(scores.mean)), np.argsort(np.argsort(y[unseen])))[0, 1] > 0.5
    assert np.all(scores.spread > 0) and np.all(np.isfinite(scores.log_ei))
    assert np.array_equal(forest_scores(X[seen], y[seen], X[unseen], seed=0).log_ei, scores.log_ei)


def test_auto_takes_the_forest_on_a_wide_descriptor_pool_and_the_gp_on_a_narrow_one() -> None:
    wide, y_wide = descriptor_table(150, informative=3, noise=FOREST_MIN_COLUMNS + 10)
    narrow, y_narrow = descriptor_table(150, informative=3, noise=0)
    planner = BotorchPlanner(n_initial=0)
    [on_wide] = planner.propose(pool_problem(wide), observe(wide, y_wide, list(range(15))), [], 1, seed=0, candidates=wide)
    [on_narrow] = planner.propose(
        pool_problem(narrow), observe(narrow, y_narrow, list(range(15))), [], 1, seed=0, candidates=narrow
    )
    assert on_wide.provenance.acquisition == FOREST
    assert any(f"{FOREST_MIN_COLUMNS + 13} informative inputs in a pool" in n for n in on_wide.provenance.notes)
    assert on_narrow.provenance.acquisition == "qLogNoisyExpectedImprovement"
    assert any("GP (auto): 3 informative input(s)" in n for n in on_narrow.provenance.notes)


def test_auto_keeps_the_gp_outside_pools_and_a_forced_forest_says_why_it_could_not() -> None:
    problem = Problem(SearchSpace((FloatParameter("x", 0.0, 1.0), FloatParameter("z", 0.0, 1.0))), (Objective("y"),))
    seen = [Observation({"x": x, "z": 1 - x}, {"y": x * (1 - x)}) for x in np.linspace(0, 1, 6).tolist()]
    [auto] = BotorchPlanner(n_initial=0).propose(problem, seen, [], 1, seed=0)
    [forced] = BotorchPlanner(n_initial=0, surrogate="forest").propose(problem, seen, [], 1, seed=0)
    assert auto.provenance.acquisition == forced.provenance.acquisition == "qLogNoisyExpectedImprovement"
    assert not any("surrogate" in n for n in auto.provenance.notes)
    assert any("a random forest needs a candidate pool" in n for n in forced.provenance.notes)
    with pytest.raises(ValueError, match="unknown surrogate 'tree'"):
        BotorchPlanner(surrogate="tree")


def test_a_large_pool_is_screened_for_noisy_ei_without_changing_the_pick() -> None:
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"x": rng.uniform(0, 1, 3000).round(5), "s": rng.choice(["a", "b", "c"], 3000)})
    table = table.drop_duplicates(ignore_index=True)
    space = SearchSpace((FloatParameter("x", 0.0, 1.0), ChoiceParameter("s", ("a", "b", "c"))))
    problem = Problem(space, (Objective("y"),))
    level = {"a": 0.0, "b": 0.3, "c": -0.2}
    seen = [
        Observation({"x": float(r.x), "s": r.s}, {"y": float(np.sin(6 * r.x) + level[r.s])})
        for r in table.iloc[:25].itertuples()
    ]
    [screened] = BotorchPlanner(n_initial=0, pool_screen=200).propose(problem, seen, [], 1, seed=2, candidates=table)
    [full] = BotorchPlanner(n_initial=0, pool_screen=0).propose(problem, seen, [], 1, seed=2, candidates=table)
    assert screened.conditions == full.conditions
    assert screened.provenance.acquisition_settings["pool_screen"].startswith(f"200 of {len(table) - 25} rows")
    assert "pool_screen" not in full.provenance.acquisition_settings
