"""Pool mode's column-wise table parsing against the row-by-row rule it replaces, and the random row pick."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.pool import candidate_pool, usable_rows
from closedloop.planners.sobol import RandomPlanner, random_rows
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


def test_a_random_row_pick_is_a_usable_unseen_row_and_reproducible() -> None:
    table = mixed_table()
    exclude = one_row_at_a_time(SPACE, table, [])[:40]
    usable = one_row_at_a_time(SPACE, table, exclude)
    picks = [random_rows(SPACE, table, exclude, 3, seed) for seed in range(20)]
    assert all(len(p) == 3 and all(point in usable for point in p) for p in picks)
    assert random_rows(SPACE, table, exclude, 3, 7) == picks[7]
    assert len({point_key(SPACE, p[0]) for p in picks}) > 10  # different seeds, different rows
    # In any order, the rows read are the usable ones, each once.
    everything = usable_rows(SPACE, table, exclude, np.arange(len(table)), len(table))
    assert [c for _, c in everything] == usable


def test_the_random_planner_reads_only_the_rows_it_picks() -> None:
    # A wide table of which only the first two columns are parameters: the pick costs the same as on a narrow one.
    rng = np.random.default_rng(1)
    wide = pd.DataFrame(rng.normal(size=(300, 400)), columns=[f"c{i}" for i in range(400)])
    problem = Problem(SearchSpace((FloatParameter("c0", -9, 9), FloatParameter("c1", -9, 9))), (Objective("y"),))
    seen = [Observation({"c0": float(wide.c0[i]), "c1": float(wide.c1[i])}, {"y": 0.0}) for i in range(30)]
    [proposal] = RandomPlanner().propose(problem, seen, [], 1, seed=4, candidates=wide)
    row = wide.index[(wide.c0 == proposal.conditions["c0"]) & (wide.c1 == proposal.conditions["c1"])]
    assert len(row) == 1 and row[0] >= 30
    assert proposal.provenance.design == "random"


def test_a_table_with_no_legal_row_is_refused_by_the_random_pick_too() -> None:
    table = pd.DataFrame({"n": [2, 3], "solvent": ["dmf", "dmf"], "t": [0.1, 0.2], "k": [2, 2], "p": [1.0, 1.0]})
    for pick in (lambda: candidate_pool(SPACE, table, []), lambda: random_rows(SPACE, table, [], 1, 0)):
        with pytest.raises(ValueError, match="none of the 2 candidate rows is a legal point"):
            pick()
