"""The feasibility model: a GP classifier over 'the sample worked', and failed samples as the worst value."""

from __future__ import annotations

import numpy as np
import torch

from planners.botorch_planner import BotorchPlanner
from planners.encoding import DTYPE, SpaceEncoding
from planners.feasibility import fit_classifier, success_probability
from planners.models import fit_models
from planners.outcomes import FEASIBILITY, build_training_data
from planners.sobol import SobolPlanner
from planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace

LINE = SearchSpace((FloatParameter("x", 0.0, 1.0),))
SQUARE = SearchSpace((FloatParameter("x", 0.0, 1.0), FloatParameter("z", 0.0, 1.0)))


def _probability(model: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        posterior = model.posterior(X)
    return success_probability(posterior.mean.squeeze(-1), posterior.variance.squeeze(-1))


def test_one_chance_failure_among_successes_stays_likely_to_work() -> None:
    """A film that failed by chance in a good region must not make its neighbourhood look hopeless,
    while a stretch where every film failed must."""
    X = torch.linspace(0.0, 1.0, 25, dtype=DTYPE).unsqueeze(-1)
    worked = (X < 0.7).to(DTYPE)  # everything above 0.7 fails
    worked[6] = 0.0  # one chance failure at x = 0.25
    classifier, failure = fit_classifier(X, worked, maxiter=200)
    assert failure is None
    p = _probability(classifier, torch.tensor([[0.25], [0.4], [0.85], [0.95]], dtype=DTYPE))
    assert p[0] > 0.5, p  # the chance failure
    assert p[1] > 0.7, p
    assert p[2] < 0.3 and p[3] < 0.3, p


def test_planner_avoids_the_edge_where_samples_fail() -> None:
    """The objective rises toward x = 1 but everything above x = 0.85 fails, as thin films dewet above
    some spin speed: after a few failures there, the planner proposes below the edge."""

    def outcome(p: dict) -> Observation:
        if p["x"] > 0.85:
            return Observation(p, {}, failed=True)
        return Observation(p, {"y": p["x"] + 0.1 * p["z"]})

    start = [p.conditions for p in SobolPlanner().propose(Problem(SQUARE, (Objective("y"),)), [], [], 10, 3)]
    observed = [outcome(p) for p in start] + [outcome({"x": 0.9 + 0.03 * i, "z": 0.3 * i}) for i in range(4)]
    problem = Problem(SQUARE, (Objective("y"),))
    planner = BotorchPlanner(n_initial=4, num_restarts=4, raw_samples=64, mc_samples=64)
    proposed = []
    for step in range(6):
        proposal = planner.propose(problem, observed, [], 1, seed=step)[0]
        proposed.append(proposal.conditions["x"])
        observed.append(outcome(proposal.conditions))
    assert sum(x > 0.85 for x in proposed) <= 1, proposed
    assert "__feasible__ >= 0 (model units)" in proposal.provenance["acquisition_settings"]["constraints"]


def test_failed_samples_can_enter_the_objective_model_as_its_worst_value() -> None:
    problem = Problem(LINE, (Objective("y", log=True),))
    observed = [
        Observation({"x": 0.1}, {"y": 10.0}),
        Observation({"x": 0.5}, {"y": 1000.0}),
        Observation({"x": 0.9}, {}, failed=True),
    ]
    encoding = SpaceEncoding(LINE)
    plain = build_training_data(problem, encoding, observed)
    padded = build_training_data(problem, encoding, observed, pad_failures=True)
    assert plain.Y[0].flatten().tolist() == [1.0, 3.0]
    assert padded.Y[0].flatten().tolist() == [1.0, 3.0, 1.0]  # log10 of the worst value seen
    assert padded.X[0][-1].tolist() == [0.9]
    assert [o.name for o in padded.outcomes] == ["y", FEASIBILITY]
    # The classifier and the objective GP fit side by side; the list model has one output per outcome.
    fitted = fit_models(padded)
    assert len(fitted.submodels()) == 2 and fitted.feasibility_threshold == 0.0
    assert 0.0 < fitted.success_probability(0.0, 1.0) < 1.0
    assert np.isclose(fitted.success_probability(0.0, 0.0), 0.5)


def test_a_replay_rebuilds_a_version_1_planner_with_its_old_failure_handling() -> None:
    from planners.registry import make_planner, options_as_of

    old = {"feasibility": "regression", "pad_failures": False}
    assert options_as_of("botorch", "1", {"n_initial": 5}) == old | {"n_initial": 5}
    assert options_as_of("botorch", "1", {"feasibility": "classifier"}) == old | {"feasibility": "classifier"}
    assert options_as_of("botorch", BotorchPlanner.version, {}) == {}
    rebuilt = make_planner("botorch", **options_as_of("botorch", "1", {}))
    assert (rebuilt.feasibility, rebuilt.pad_failures) == ("regression", False)
    current = BotorchPlanner()
    assert (current.feasibility, current.pad_failures) == ("classifier", True)


def test_a_long_campaign_fits_the_classifier_on_a_bounded_set_of_inducing_points() -> None:
    from planners.feasibility import MAX_INDUCING_POINTS

    X = torch.rand(120, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    worked = (X[:, :1] < 0.8).to(DTYPE)
    classifier, failure = fit_classifier(X, worked, maxiter=100)
    assert failure is None
    assert classifier.model.variational_strategy.inducing_points.shape[0] == MAX_INDUCING_POINTS
    p = _probability(classifier, torch.tensor([[0.3, 0.5, 0.5], [0.97, 0.5, 0.5]], dtype=DTYPE))
    assert p[0] > 0.7 and p[1] < 0.4, p
