"""Pool mode's column-wise table parsing against the row-by-row rule it replaces, and the random row pick."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.pool import candidate_pool
from closedloop.planners.sobol import RandomPlanner
from closedloop.planners.space import (
    ChoiceParameter,
    Conditions,
    FixedParameter,
    FloatParameter,
    IntParameter,
    LinearConstraint,
    Objective,
    Observation,
    Problem,
    SearchSpace,
)

SPACE = SearchSpace(
    (
        IntParameter("n", 1, 10, 3),  # legal: 1, 4, 7, 10
        ChoiceParameter("solvent", ("dmf", "dmso", "7")),
        FloatParameter("t", 0.0, 1.5),
        IntParameter("k", 0, 15, 2),
        FixedParameter("p", 1.0),
        FixedParameter("site", "lab-a"),  # absent from the table: every row takes it
    ),
    (LinearConstraint({"n": 1.0, "t": 2.0}, 12.0),),
)


def mixed_table(rows: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "n": rng.integers(0, 12, rows).astype(float),
            "solvent": rng.choice(["dmf", "dmso", "water", "7"], rows),
            "t": rng.uniform(-0.2, 1.7, rows).round(2),
            "k": rng.integers(0, 18, rows),
            "p": rng.choice([1.0, 2.0], rows, p=[0.8, 0.2]),
            "unused": rng.normal(size=rows),
        }
    )
    table.loc[rng.choice(rows, 60, replace=False), "n"] = np.nan  # an int column with gaps: floats
    table.loc[rng.choice(rows, 30, replace=False), "n"] = 2.5  # not an integer
    table.loc[rng.choice(rows, 40, replace=False), "t"] = np.inf
    return pd.concat([table, table.iloc[:50]], ignore_index=True)  # repeated rows


def legal_rows(space: SearchSpace, table: pd.DataFrame) -> list[Conditions]:
    """The rule, row by row: each cell as its parameter's type, then the space's own `contains`."""
    out = []
    for record in table.to_dict("records"):
        point: Conditions = {}
        for p in space.parameters:
            raw = record.get(p.name)
            if isinstance(p, FixedParameter):
                point[p.name] = p.value if raw is None or raw == p.value else "illegal"
            elif isinstance(p, ChoiceParameter):
                point[p.name] = str(raw)
            elif isinstance(p, IntParameter):
                ok = isinstance(raw, int | float) and math.isfinite(raw) and float(raw).is_integer()
                point[p.name] = int(raw) if ok else "illegal"
            else:
                point[p.name] = float(raw) if math.isfinite(raw) else "illegal"
        if "illegal" not in point.values() and space.contains(point):
            out.append(point)
    return out


def one_row_at_a_time(space: SearchSpace, table: pd.DataFrame, exclude: list[Conditions]) -> list[Conditions]:
    """The legal rows, first occurrence of each point only, none equal to an `exclude` point."""
    seen = {point_key(space, c) for c in exclude}
    out = []
    for point in legal_rows(space, table):
        if point_key(space, point) not in seen:
            seen.add(point_key(space, point))
            out.append(point)
    return out


def test_the_column_wise_pool_is_the_row_by_row_pool_with_the_same_types() -> None:
    table = mixed_table()
    exclude = [
        {"n": 4, "solvent": "dmf", "t": float(t), "k": 2, "p": 1.0, "site": "lab-a"} for t in table["t"].head(300)
    ] + one_row_at_a_time(SPACE, table, [])[:25]
    expected = one_row_at_a_time(SPACE, table, exclude)
    pool = candidate_pool(SPACE, table, exclude)
    got = list(pool)
    assert 100 < len(got) < len(table) // 2  # the table exercises both sides of every rule
    assert got == expected
    assert [type(v) for v in got[0].values()] == [int, str, float, int, float, str]
    assert [pool[i] for i in range(3)] == expected[:3] and pool[-1] == expected[-1]
    # Rows are positions in the table: the pool's points are exactly those rows.
    assert table.iloc[pool.rows[0]]["t"] == got[0]["t"]
    assert pool.skipped_rows == len(table) - len(legal_rows(SPACE, table))


def test_the_pool_encodes_without_a_row_loop_as_the_encoding_does() -> None:
    space = SearchSpace(
        (FloatParameter("c", 0.1, 100.0, log=True), IntParameter("n", 1, 10, 3), ChoiceParameter("s", ("a", "b")))
    )
    table = pd.DataFrame({"c": [0.1, 3.0, 100.0, 7.5], "n": [1, 4, 10, 7], "s": ["b", "a", "a", "b"]})
    pool = candidate_pool(space, table, [])
    encoding = SpaceEncoding(space)
    assert np.allclose(pool.encoded(encoding).numpy(), encoding.encode(list(pool)).numpy(), atol=1e-12)


def test_rows_that_agree_on_the_first_parameters_are_still_told_apart() -> None:
    # Rows are first compared by their first few parameters; the full key decides when those agree.
    names = [f"c{i}" for i in range(8)]
    space = SearchSpace(tuple(FloatParameter(n, 0.0, 1.0) for n in names))
    table = pd.DataFrame([[0.5] * 7 + [v] for v in (0.1, 0.2, 0.1, 0.3)], columns=names)
    known = [dict(zip(names, [0.5] * 7 + [0.3], strict=True))]
    pool = candidate_pool(space, table, known)
    assert [p["c7"] for p in pool] == [0.1, 0.2] and pool.rows.tolist() == [0, 1]


def test_the_random_planner_picks_usable_unseen_rows_of_a_wide_table() -> None:
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.normal(size=(300, 400)).round(6), columns=[f"c{i}" for i in range(400)])
    space = SearchSpace(tuple(FloatParameter(c, -9.0, 9.0) for c in wide.columns))
    problem = Problem(space, (Objective("y"),))
    seen = [Observation({c: float(wide[c].iloc[i]) for c in wide.columns}, {"y": 0.0}) for i in range(30)]
    picks = [RandomPlanner().propose(problem, seen, [], 2, seed=s, candidates=wide) for s in (4, 4, 5)]
    assert [p.conditions for p in picks[0]] == [p.conditions for p in picks[1]]
    rows = [int(np.flatnonzero((wide == pd.Series(p.conditions)).all(axis=1))[0]) for p in picks[0] + picks[2]]
    assert all(r >= 30 for r in rows) and rows[0] != rows[1]


def test_a_table_with_no_legal_row_is_refused_naming_its_first_row() -> None:
    table = pd.DataFrame({"n": [2, 3], "solvent": ["dmf", "dmf"], "t": [0.1, 0.2], "k": [2, 2], "p": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"none of the 2 candidate rows is a legal point .*'n': 2"):
        candidate_pool(SPACE, table, [])
