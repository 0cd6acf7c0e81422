"""Property tests: over random mixed spaces with random feasible constraints, nothing illegal comes out.

Most examples go through the Sobol/random paths and the encoding/repair logic (cheap); a few dozen
go through real BoTorch fits with tiny optimizer settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.planners.botorch_planner import BotorchPlanner
from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.repair import make_legal
from closedloop.planners.sobol import RandomPlanner, SobolPlanner
from closedloop.planners.space import (
    ChoiceParameter,
    Conditions,
    FixedParameter,
    FloatParameter,
    IntParameter,
    LinearConstraint,
    Objective,
    Observation,
    OutcomeConstraint,
    Parameter,
    Problem,
    SearchSpace,
)

PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])



@dataclass(frozen=True)
class Case:
    space: SearchSpace
    witness: Conditions  # a legal point the constraints were built around: the space is never empty
    ints_constrained: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    params: list[Parameter] = []
    witness: Conditions = {}
    widths = st.sampled_from([1e-3, 0.5, 1.0, 37.0, 1e4])
    for i in range(draw(st.integers(0, 3))):
        low, width, u = draw(st.floats(-1e3, 1e3)), draw(widths), draw(st.floats(0.05, 0.95))
        params.append(FloatParameter(f"f{i}", low, low + width))
        witness[f"f{i}"] = min(low + u * width, low + width)
    for i in range(draw(st.integers(0, 2))):
        low, step, steps = draw(st.integers(-50, 50)), draw(st.integers(1, 7)), draw(st.integers(0, 12))
        high = low + step * steps + draw(st.integers(0, step - 1))  # high off the grid on purpose
        params.append(IntParameter(f"i{i}", low, high, step))
        witness[f"i{i}"] = low + step * draw(st.integers(0, steps))
    if draw(st.booleans()):
        low = draw(st.sampled_from([1e-9, 1e-3, 2.0]))
        params.append(FloatParameter("lg", low, low * draw(st.sampled_from([10.0, 1e6])), log=True))
        witness["lg"] = low
    for i in range(draw(st.integers(0, 2))):
        values = tuple(f"v{k}" for k in range(draw(st.integers(1, 4))))
        params.append(ChoiceParameter(f"c{i}", values))
        witness[f"c{i}"] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        params.append(FixedParameter("fixed", 7.5))
        witness["fixed"] = 7.5
    constraints: list[LinearConstraint] = []
    if draw(st.booleans()):  # a composition that sums to one
        weights = [draw(st.floats(0.01, 1.0)) for _ in range(3)]
        for k, w in enumerate(weights):
            params.append(FloatParameter(f"x{k}", 0.0, 1.0))
            witness[f"x{k}"] = w / sum(weights)
        constraints.append(LinearConstraint({f"x{k}": 1.0 for k in range(3)}, 1.0, "==", "x0 + x1 + x2 == 1"))
    linear = [p.name for p in params if isinstance(p, FloatParameter | IntParameter) and p.name != "lg"]
    if len(linear) >= 2 and draw(st.booleans()):  # a general equality over floats only
        floats = [n for n in linear if n.startswith("f")][:2]
        if len(floats) == 2:
            coefficients = {n: draw(st.sampled_from([0.5, 1.0, -2.0])) for n in floats}
            constraints.append(
                LinearConstraint(coefficients, sum(c * witness[n] for n, c in coefficients.items()), "==")
            )
    ints_constrained = False
    for _ in range(draw(st.integers(0, 2)) if linear else 0):
        names = draw(st.lists(st.sampled_from(linear), min_size=1, max_size=3, unique=True))
        coefficients = {n: draw(st.sampled_from([-3.0, -1.0, 0.25, 1.0, 2.0])) for n in names}
        if "fixed" in witness and draw(st.booleans()):
            coefficients["fixed"] = 1.0
        lhs = sum(c * float(witness[n]) for n, c in coefficients.items())
        scale = sum(abs(c) for c in coefficients.values()) * max(abs(lhs), 1.0)
        constraints.append(LinearConstraint(coefficients, lhs + draw(st.floats(0.02, 0.5)) * scale))
        ints_constrained |= any(n.startswith("i") for n in names)
    if not params:
        params.append(FloatParameter("only", 0.0, 1.0))
        witness["only"] = 0.5
    space = SearchSpace(tuple(params), tuple(constraints))
    assert space.contains(witness), (space, witness)
    return Case(space, witness, ints_constrained)


def assert_legal_and_new(space: SearchSpace, points: list[Conditions], known: list[Conditions]) -> None:
    keys = [point_key(space, p) for p in points]
    assert all(space.contains(p) for p in points), [p for p in points if not space.contains(p)]
    assert len(set(keys)) == len(keys), "a batch repeats a point"
    assert not set(keys) & {point_key(space, k) for k in known}, "a known point was proposed again"


@settings(PROPERTY, max_examples=250)
@given(case=cases(), n=st.integers(1, 6), seed=st.integers(0, 2**40), random=st.booleans())
@pytest.mark.slow
def test_model_free_planners_only_propose_legal_new_points(
    case: Case, n: int, seed: int, random: bool
) -> None:
    planner = RandomPlanner() if random else SobolPlanner()
    problem = Problem(case.space, (Objective("y"),))
    pending = [case.witness]
    proposals = planner.propose(problem, [], pending, n, seed)
    points = [p.conditions for p in proposals]
    assert_legal_and_new(case.space, points, pending)
    assert points == [p.conditions for p in planner.propose(problem, [], pending, n, seed)]
    finite = SpaceEncoding(case.space).is_finite
    assert len(points) == n or finite, "a continuous space never runs out"


@settings(PROPERTY, max_examples=250)
@given(case=cases(), seed=st.integers(0, 2**32 - 1))
@pytest.mark.slow
def test_repair_turns_any_relaxed_point_into_a_legal_one(case: Case, seed: int) -> None:
    encoding = SpaceEncoding(case.space)
    # Points well outside the unit cube too: optimizers and warm starts overshoot.
    X = (
        torch.rand(16, encoding.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.4
        - 0.2
    )
    for relaxed in encoding.decode(X):
        legal = make_legal(encoding, relaxed)
        if legal is None:
            assert case.ints_constrained, "floats alone can always be moved onto the constraints"
        else:
            assert case.space.contains(legal)
    witness = make_legal(encoding, encoding.decode(encoding.encode([case.witness]))[0])
    assert witness is not None and point_key(case.space, witness) == point_key(case.space, case.witness)


@st.composite
def histories(draw: st.DrawFn, case: Case) -> tuple[list[Observation], list[Conditions]]:
    legal = [
        p.conditions for p in SobolPlanner().propose(Problem(case.space, (Objective("y"),)), [], [], 12, 0)
    ]
    chosen = draw(st.lists(st.sampled_from(legal), min_size=1, max_size=10))  # duplicates allowed
    kind = st.sampled_from(["ok", "ok", "ok", "failed", "nan", "huge", "tiny"])
    observations = []
    for point in chosen:
        k, y = draw(kind), draw(st.floats(-5, 5))
        value = {"ok": y, "nan": math.nan, "huge": 1e3 * (1 + y), "tiny": 1e-9 * (1 + y)}.get(k)
        observations.append(
            Observation(point, {} if k == "failed" else {"y": value, "tau": y + 1}, failed=k == "failed")
        )
    pending = draw(st.lists(st.sampled_from(legal), max_size=2, unique_by=lambda p: point_key(case.space, p)))
    return observations, pending


@settings(PROPERTY, max_examples=40)
@given(data=st.data(), case=cases(), n=st.integers(1, 3), seed=st.integers(0, 2**32), pool=st.booleans())
@pytest.mark.slow
def test_botorch_planner_only_proposes_legal_new_points(
    data: st.DataObject, case: Case, n: int, seed: int, pool: bool
) -> None:
    observations, pending = data.draw(histories(case))
    problem = Problem(
        case.space,
        (Objective("y", maximize=data.draw(st.booleans())),),
        outcome_constraints=(OutcomeConstraint("tau", ">=", 0.0),) if data.draw(st.booleans()) else (),
    )
    planner = BotorchPlanner(
        n_initial=1,
        num_restarts=2,
        raw_samples=16,
        mc_samples=16,
        fit_maxiter=20,
        optimizer_maxiter=25,
        max_choice_combinations=3,
    )
    candidates = None
    if pool:
        rows = [p.conditions for p in SobolPlanner().propose(problem, [], [], 10, seed=seed)]
        candidates = pd.DataFrame(rows + [case.witness]).assign(note="row")
    proposals = planner.propose(problem, observations, pending, n, seed, candidates)
    points = [p.conditions for p in proposals]
    known = [o.conditions for o in observations] + pending
    assert_legal_and_new(case.space, points, pending + ([] if candidates is None else known))
    if candidates is not None:
        table_keys = {point_key(case.space, r) for r in candidates.drop(columns="note").to_dict("records")}
        assert all(point_key(case.space, p) in table_keys for p in points)
    else:
        assert len(points) == n or SpaceEncoding(case.space).is_finite
    for p in proposals:
        value = p.provenance.acquisition_value
        assert value is None or np.isfinite(value)
        # Only data that cannot support a model may fall back; an exception inside the step is a bug.
        assert "step failed" not in (p.provenance.fallback or ""), p.provenance.fallback
