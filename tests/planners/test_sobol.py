"""Model-free planners, the encoding, pool mode, provenance and the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.provenance import Provenance
from closedloop.planners.registry import make_planner, planner_options
from closedloop.planners.repair import make_legal
from closedloop.planners.sobol import RandomPlanner, SobolPlanner
from closedloop.planners.space import (
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    IntParameter,
    LinearConstraint,
    Objective,
    Observation,
    Problem,
    SearchSpace,
)

MIXED = SearchSpace(
    (
        FloatParameter("a", 0.0, 1.0),
        FloatParameter("b", 0.0, 1.0),
        FloatParameter("c", 0.0, 1.0),
        IntParameter("spin", 600, 4000, 100),
        FloatParameter("dose", 1e-4, 1e-1, log=True),
        ChoiceParameter("solvent", ("cb", "odcb", "cf")),
        FixedParameter("wavelength", 500.0),
    ),
    (
        LinearConstraint({"a": 1.0, "b": 1.0, "c": 1.0}, 1.0, "==", "a + b + c == 1"),
        LinearConstraint({"a": 1.0, "spin": 0.0002}, 0.9, "<=", "a + 0.0002 * spin <= 0.9"),
    ),
)
MIXED_PROBLEM = Problem(MIXED, (Objective("y"),))
SQUARE = Problem(
    SearchSpace((FloatParameter("x", 0.0, 1.0), FloatParameter("z", 0.0, 1.0))), (Objective("y"),)
)


def conditions(proposals: list) -> list[dict]:
    return [p.conditions for p in proposals]


@pytest.mark.parametrize("planner", [SobolPlanner(), RandomPlanner()], ids=["sobol", "random"])
def test_proposals_are_legal_distinct_and_reproducible(planner) -> None:
    first = planner.propose(MIXED_PROBLEM, [], [], 12, seed=5)
    again = planner.propose(MIXED_PROBLEM, [], [], 12, seed=5)
    other = planner.propose(MIXED_PROBLEM, [], [], 12, seed=6)
    assert len(first) == 12
    assert all(MIXED.contains(c) for c in conditions(first))
    assert conditions(first) == conditions(again)
    assert conditions(first) != conditions(other)
    assert len({json.dumps(c, sort_keys=True) for c in conditions(first)}) == 12
    point = first[0].conditions
    assert isinstance(point["spin"], int) and isinstance(point["a"], float) and point["wavelength"] == 500.0


def test_sobol_design_fills_space_better_than_random() -> None:
    def min_gap(points: list[dict]) -> float:
        xy = np.array([[p["x"], p["z"]] for p in points])
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        return float(d[np.triu_indices(len(xy), 1)].min())

    sobol = [min_gap(conditions(SobolPlanner().propose(SQUARE, [], [], 16, seed=s))) for s in range(5)]
    rand = [min_gap(conditions(RandomPlanner().propose(SQUARE, [], [], 16, seed=s))) for s in range(5)]
    assert np.mean(sobol) > 2 * np.mean(rand)


def test_sobol_stays_away_from_observed_and_pending_points() -> None:
    observed = [Observation({"x": 0.1 * i, "z": 0.1 * i}, {"y": 0.0}) for i in range(10)]
    pending = [{"x": 0.9, "z": 0.1}]
    proposals = SobolPlanner().propose(SQUARE, observed, pending, 4, seed=0)
    known = np.array([[0.1 * i, 0.1 * i] for i in range(10)] + [[0.9, 0.1]])
    for c in conditions(proposals):
        assert np.linalg.norm(known - [c["x"], c["z"]], axis=1).min() > 0.1


def test_finite_space_runs_out_instead_of_repeating() -> None:
    space = SearchSpace(
        (IntParameter("i", 0, 4), ChoiceParameter("s", ("p", "q"))), (LinearConstraint({"i": 1}, 2),)
    )
    problem = Problem(space, (Objective("y"),))
    observed = [Observation({"i": 0, "s": "p"}, {"y": 1.0})]
    pending = [{"i": 1, "s": "q"}]
    for planner in (SobolPlanner(), RandomPlanner()):
        got = conditions(planner.propose(problem, observed, pending, 10, seed=1))
        assert len(got) == 4  # 3 ints x 2 choices, minus one observed and one pending
        assert {"i": 0, "s": "p"} not in got and {"i": 1, "s": "q"} not in got
        assert all(space.contains(c) for c in got)
        assert planner.propose(problem, observed, pending, 0, seed=1) == []


@pytest.mark.parametrize("planner", [SobolPlanner(), RandomPlanner()], ids=["sobol", "random"])
def test_pool_mode_takes_table_rows_and_never_repeats(planner) -> None:
    table = pd.DataFrame(
        {
            "x": np.linspace(0, 1, 12),
            "z": np.linspace(1, 0, 12),
            "sample_id": [f"S{i}" for i in range(12)],  # extra columns are ignored
        }
    )
    table.loc[11, "x"] = 3.0  # outside the bounds: never proposed
    rows = {(float(r.x), float(r.z)) for r in table.itertuples()}
    observed: list[Observation] = []
    pending = [{"x": float(table.x[0]), "z": float(table.z[0])}]
    seen = {(pending[0]["x"], pending[0]["z"])}
    for step in range(6):
        got = conditions(planner.propose(SQUARE, observed, pending, 2, seed=step, candidates=table))
        for c in got:
            key = (c["x"], c["z"])
            assert key in rows and key not in seen and c["x"] <= 1.0
            seen.add(key)
            observed.append(Observation(c, {"y": 0.0}))
    assert len(seen) == 11
    assert planner.propose(SQUARE, observed, pending, 2, seed=9, candidates=table) == []


def test_pool_mode_reports_missing_columns_and_a_table_outside_the_space() -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['z'\]"):
        SobolPlanner().propose(SQUARE, [], [], 1, seed=0, candidates=pd.DataFrame({"x": [0.5]}))
    with pytest.raises(ValueError, match="none of the 2 candidate rows"):
        SobolPlanner().propose(
            SQUARE, [], [], 1, seed=0, candidates=pd.DataFrame({"x": [5.0, 6.0], "z": [0, 0]})
        )


def test_provenance_is_complete_json_and_tracks_the_data() -> None:
    observed = [Observation({"x": 0.2, "z": 0.3}, {"y": 1.5})]
    a = SobolPlanner().propose(SQUARE, observed, [], 1, seed=3)[0].provenance
    b = (
        SobolPlanner()
        .propose(SQUARE, [Observation({"x": 0.2, "z": 0.3}, {"y": 1.6})], [], 1, seed=3)[0]
        .provenance
    )
    required = {
        "planner", "planner_version", "seed", "data_hash", "n_observations", "acquisition", "acquisition_value",
        "hyperparameters", "fit_time_s", "optimize_time_s", "fallback",
    }  # fmt: skip
    assert required <= set(a.to_dict())
    assert Provenance.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.planner == "sobol" and a.seed == 3 and a.n_observations == 1
    assert a.data_hash != b.data_hash and a.data_hash is not None and len(a.data_hash) == 64


def test_initial_design_then_rule_is_recorded() -> None:
    planner = RandomPlanner(n_initial=2, initial_method="sobol")
    assert planner.propose(SQUARE, [], [], 1, seed=0)[0].provenance.design == "initial"
    observed = [Observation({"x": 0.5, "z": 0.5}, {"y": 0.0})] * 2
    assert planner.propose(SQUARE, observed, [], 1, seed=0)[0].provenance.design == "random"


def test_planner_leaves_global_random_state_alone() -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    SobolPlanner().propose(MIXED_PROBLEM, [], [], 4, seed=11)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])


def test_encoding_maps_log_int_and_choice_to_the_unit_cube() -> None:
    enc = SpaceEncoding(MIXED)
    point = {"a": 0.2, "b": 0.3, "c": 0.5, "spin": 2300, "dose": 1e-2, "solvent": "cf", "wavelength": 500.0}
    x = enc.encode([point])[0]
    assert enc.dim == 8  # a, b, c, spin, dose, 3 one-hot columns; wavelength is fixed
    assert math.isclose(float(x[4]), 2 / 3)  # log10(1e-2) is 2/3 of the way from -4 to -1
    assert math.isclose(float(x[3]), 0.5) and x[5:].tolist() == [0.0, 0.0, 1.0]
    assert make_legal(enc, enc.decode(enc.encode([point]))[0]) == pytest.approx(point)


def test_encoding_writes_constraints_in_botorch_convention() -> None:
    enc = SpaceEncoding(MIXED)
    [(idx, coef, rhs)] = enc.inequality_constraints
    # a + 0.0002 * spin <= 0.9  ->  -a - 0.68 * spin_unit >= -(0.9 - 0.12)
    assert idx.tolist() == [0, 3]
    assert coef.tolist() == pytest.approx([-1.0, -0.68])
    assert rhs == pytest.approx(-0.78)
    [(_, eq_coef, eq_rhs)] = enc.equality_constraints
    assert eq_coef.tolist() == [1.0, 1.0, 1.0] and eq_rhs == pytest.approx(1.0)


def test_repair_moves_floats_to_meet_an_equality_with_ints_on_grid() -> None:
    enc = SpaceEncoding(MIXED)
    relaxed = enc.decode(torch.tensor([[0.5, 0.5, 0.5, 0.437, 0.1, 0.2, 0.9, 0.1]], dtype=torch.float64))[0]
    legal = make_legal(enc, relaxed)
    assert legal is not None and MIXED.contains(legal)
    assert legal["spin"] in (2000, 2100) and legal["solvent"] == "odcb"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            SearchSpace((FloatParameter("x", 1e-3, 1.0, log=True), FloatParameter("z", 0, 1)),
                        (LinearConstraint({"x": 1, "z": 1}, 1.0),)),
            "log-scaled parameter 'x'",
        ),
        (SearchSpace((ChoiceParameter("s", ("a",)),), (LinearConstraint({"s": 1}, 1.0),)), "non-numeric"),
        (SearchSpace((FloatParameter("x", 0, 1),), (LinearConstraint({"q": 1}, 1.0),)), "'q', which is not"),
        (SearchSpace((FloatParameter("x", 2, 1),)), "low 2 is above high 1"),
    ],
)  # fmt: skip
def test_unsearchable_spaces_are_named(space: SearchSpace, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SobolPlanner().propose(Problem(space, (Objective("y"),)), [], [], 1, seed=0)


def test_infeasible_constraints_say_so() -> None:
    space = SearchSpace(
        (FloatParameter("x", 0, 1), FloatParameter("z", 0, 1)),
        (LinearConstraint({"x": 1, "z": 1}, 3.0, "=="),),
    )
    with pytest.raises(ValueError, match="cannot all hold"):
        SobolPlanner().propose(Problem(space, (Objective("y"),)), [], [], 1, seed=0)


def test_registry_builds_by_name_and_rejects_unknowns() -> None:
    assert make_planner("sobol").name == "sobol"
    assert make_planner("random", n_initial=3).n_initial == 3
    assert make_planner("botorch", n_initial=4, initial_method="random").n_initial == 4
    assert "num_restarts" in planner_options("botorch")
    with pytest.raises(ValueError, match="choose one of"):
        make_planner("ax")
    with pytest.raises(ValueError, match="no option"):
        make_planner("botorch", restarts=3)
    with pytest.raises(ValueError, match="unknown initial design"):
        make_planner("botorch", initial_method="lhs")
