"""The feasibility model: a GP classifier over 'the sample worked', and failed samples as the worst value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.planners.botorch_planner import BotorchPlanner
from closedloop.planners.encoding import DTYPE, SpaceEncoding
from closedloop.planners.feasibility import fit_classifier, success_probability
from closedloop.planners.models import fit_models
from closedloop.planners.outcomes import FEASIBILITY, build_training_data
from closedloop.planners.sampling import isolated_rng
from closedloop.planners.sobol import SobolPlanner
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace

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


@pytest.mark.slow
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
    assert "__feasible__ >= 0 (model units)" in proposal.provenance.acquisition_settings["constraints"]


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
    from closedloop.planners.registry import make_planner, options_as_of

    # Version 1's own changes, and version 2's (RBF kernel, no pool screen, no forest): a version-1 call
    # had those too.
    old = {"feasibility": "regression", "pad_failures": False, "surrogate": "gp", "pool_screen": 0, "kernel": "rbf",
           "max_fit_points": 500}
    assert options_as_of("botorch", "1", {"n_initial": 5}) == old | {"n_initial": 5}
    assert options_as_of("botorch", "1", {"feasibility": "classifier"}) == old | {"feasibility": "classifier"}
    assert options_as_of("botorch", BotorchPlanner.version, {}) == {}
    rebuilt = make_planner("botorch", **options_as_of("botorch", "1", {}))
    assert (rebuilt.feasibility, rebuilt.pad_failures) == ("regression", False)
    current = BotorchPlanner()
    assert (current.feasibility, current.pad_failures) == ("classifier", True)


def test_a_long_campaign_fits_the_classifier_on_a_bounded_set_of_inducing_points() -> None:
    from closedloop.planners.feasibility import MAX_INDUCING_POINTS

    X = torch.rand(120, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    worked = (X[:, :1] < 0.8).to(DTYPE)
    classifier, failure = fit_classifier(X, worked, maxiter=100)
    assert failure is None
    assert classifier.model.variational_strategy.inducing_points.shape[0] == MAX_INDUCING_POINTS
    p = _probability(classifier, torch.tensor([[0.3, 0.5, 0.5], [0.97, 0.5, 0.5]], dtype=DTYPE))
    assert p[0] > 0.7 and p[1] < 0.4, p


def test_success_weight_is_exactly_the_probability_of_working() -> None:
    """BoTorch's smoothed feasibility indicator turns SuccessWeight into Phi(f) per sample, and its hard
    test (used for the incumbent) still reads 'feasible' exactly where f >= 0."""
    from botorch.utils.objective import compute_smoothed_feasibility_indicator
    from botorch.utils.safe_math import fatmoid

    from closedloop.planners.acquisition import CONSTRAINT_ETA, SuccessWeight, inverse_fatmoid

    p = torch.tensor([1e-9, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-9], dtype=DTYPE)
    assert torch.allclose(fatmoid(inverse_fatmoid(p)), p, rtol=1e-9, atol=1e-15)
    latent = torch.linspace(-4.0, 4.0, 81, dtype=DTYPE).reshape(1, 81, 1, 1)  # samples x batch x q x m
    weight = compute_smoothed_feasibility_indicator([SuccessWeight(0)], latent, eta=CONSTRAINT_ETA, fat=True)
    assert torch.allclose(weight.flatten(), torch.special.ndtr(latent.flatten()), atol=1e-9)
    assert torch.equal(SuccessWeight(0)(latent).flatten() <= 0, latent.flatten() >= 0)


def test_acquisition_is_expected_improvement_times_probability_of_working() -> None:
    """Constrained EI: on a line where half the samples below x = 0.3 fail, the weighted acquisition
    differs from the unweighted one by log P(success) of the classifier, point by point. (The best films
    lie where none fail, so both acquisitions improve on the same incumbent.)

    Run under the planner's own seeded generator, as every proposal is. The identity is exact only while
    no Monte-Carlo sample has every baseline film failing: in such a sample constrained noisy EI has no
    incumbent, counts any working film as an improvement, and here (log EI near -42) one such sample in
    4096 lifts the weighted value by ~e^33. Whether one occurs depends on the classifier's random start,
    which is why the global generator must not decide it."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.sampling import SobolQMCNormalSampler

    from closedloop.planners.acquisition import build_acquisition, first_output

    problem = Problem(LINE, (Objective("y"),))
    xs = np.linspace(0.0, 1.0, 21)
    observed = [
        Observation({"x": x}, {}, failed=True)
        if x < 0.3 and i % 2
        else Observation({"x": x}, {"y": 1 - 4 * (x - 0.5) ** 2})
        for i, x in enumerate(xs)
    ]
    encoding = SpaceEncoding(LINE)
    data = build_training_data(problem, encoding, observed, pad_failures=True)
    with isolated_rng(0):
        fitted = fit_models(data)
    X = torch.tensor([[0.25], [0.2], [0.1]], dtype=DTYPE)  # away from the incumbent's own samples
    none = torch.empty(0, 1, dtype=DTYPE)
    with isolated_rng(0):
        weighted = build_acquisition(problem, fitted, data, none, 0, 4096, feasibility_weight="probability")
        plain = qLogNoisyExpectedImprovement(
            fitted.model, X_baseline=data.baseline, sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0),
            objective=GenericMCObjective(first_output), prune_baseline=True,
        )
    assert weighted.settings["constraints"] == ["weighted by P(__feasible__) (classifier)"]
    with torch.no_grad():
        difference = (weighted.function(X.unsqueeze(1)) - plain(X.unsqueeze(1))).exp()
        latent = fitted.submodels()[1].posterior(X)
    p = success_probability(latent.mean.flatten(), latent.variance.flatten())
    assert ((p > 0.3) & (p < 0.85)).all(), p  # the classifier saw the failures
    assert torch.allclose(difference, p, rtol=0.1), (difference, p)
    majority = build_acquisition(problem, fitted, data, none, 0, 4096, feasibility_weight="majority")
    assert majority.settings["constraints"] == ["__feasible__ >= 0 (model units)"]


def test_an_unknown_feasibility_weight_is_refused_with_the_choices() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"feasibility_weight must be one of \['probability', 'majority'\]"):
        BotorchPlanner(feasibility_weight="sure")
