"""The BoTorch planner's optional model and acquisition settings, with real fits on small pools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.planners.botorch_planner import BotorchPlanner
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace

LINE = Problem(SearchSpace((FloatParameter("x", 0.0, 1.0),)), (Objective("y"),))
POOL = pd.DataFrame({"x": np.round(np.linspace(0.0, 1.0, 101), 2)})


def noisy_plateau(seed: int = 0) -> list[Observation]:
    """A good but noisy region around x = 0.5, sampled densely; a flat poor level sampled sparsely elsewhere."""
    rng = np.random.default_rng(seed)
    inside = [
        Observation({"x": float(x)}, {"y": 1.0 + 0.4 * rng.standard_normal()})
        for x in np.arange(0.44, 0.57, 0.01)
    ]
    outside = [Observation({"x": x}, {"y": 0.05 * rng.standard_normal()}) for x in (0.15, 0.25, 0.75, 0.85)]
    return inside + outside


def planner(**options: object) -> BotorchPlanner:
    return BotorchPlanner(n_initial=2, **({"analytic_ei": True} | options))  # type: ignore[arg-type]


def test_predictive_ei_stays_in_a_noisy_good_region_and_records_its_incumbent() -> None:
    observations = noisy_plateau()
    [proposal] = planner(predictive_ei=True).propose(LINE, observations, [], 1, seed=3, candidates=POOL)
    provenance = proposal.provenance
    assert provenance.design == "model"
    assert provenance.acquisition == "LogExpectedImprovement(predictive)"
    # The incumbent is the best measured value, not a model estimate of it.
    assert provenance.acquisition_settings["best_f"] == pytest.approx(
        max(o.values["y"] for o in observations)
    )
    # A new measurement there can beat the lucky best, so the next trial stays in the region.
    assert 0.38 <= proposal.conditions["x"] <= 0.62


def test_latent_and_predictive_ei_use_different_incumbents() -> None:
    observations = noisy_plateau()
    [latent] = planner().propose(LINE, observations, [], 1, seed=3, candidates=POOL)
    [predictive] = planner(predictive_ei=True).propose(LINE, observations, [], 1, seed=3, candidates=POOL)
    assert latent.provenance.acquisition == "LogExpectedImprovement"
    # The posterior mean shrinks the noisy best toward the region's level.
    assert (
        latent.provenance.acquisition_settings["best_f"]
        < predictive.provenance.acquisition_settings["best_f"]
    )


@pytest.mark.parametrize(
    "options", [{"predictive_ei": True}, {"power_transform": True, "kernel": "matern52"}]
)
def test_pool_proposals_are_reproducible_and_new(options: dict[str, object]) -> None:
    observations = noisy_plateau(seed=1)
    first = planner(**options).propose(LINE, observations, [], 1, seed=11, candidates=POOL)
    second = planner(**options).propose(LINE, observations, [], 1, seed=11, candidates=POOL)
    assert [p.conditions for p in first] == [p.conditions for p in second]
    assert first[0].conditions["x"] not in {o.conditions["x"] for o in observations}


def test_predictive_ei_without_analytic_ei_keeps_noisy_log_ei() -> None:
    [proposal] = BotorchPlanner(n_initial=2, predictive_ei=True, mc_samples=32).propose(
        LINE, noisy_plateau(), [], 1, seed=0, candidates=POOL
    )
    assert proposal.provenance.acquisition == "qLogNoisyExpectedImprovement"


def test_bad_option_values_name_the_option() -> None:
    with pytest.raises(ValueError, match="predictive_ei must be true or false"):
        BotorchPlanner(predictive_ei="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown kernel 'laplace'"):
        BotorchPlanner(kernel="laplace")
