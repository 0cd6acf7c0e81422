"""Acquisition functions: noisy log-EI for one objective, noisy log-EHVI for several.

Outcome constraints and the feasibility model enter as BoTorch constraint callables, which map
posterior samples to values that are negative where the constraint holds; the acquisition weighs
each sample's improvement by a smooth estimate of that. Pending points enter as X_pending.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective import logei as _mo_logei
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from botorch.utils.multi_objective.pareto import is_non_dominated
from torch import Tensor

from closedloop.planners.encoding import DTYPE
from closedloop.planners.models import FittedModels
from closedloop.planners.outcomes import FEASIBILITY, TrainingData
from closedloop.planners.sampling import derive_seed
from closedloop.planners.space import Problem

# BoTorch 0.18 JIT-compiles a C++ kernel (torch cpp_extension, -march=native) the first time a
# qLogNEHVI is built: ~40 s of compiling inside a campaign, ninja required, and a process killed
# mid-compile leaves a lock file on which every later campaign waits forever (seen here). Marking the
# load as attempted keeps BoTorch on its pure-PyTorch path: slower per evaluation, never a hang.
_mo_logei._load_attempted = True

SINGLE_OBJECTIVE = "qLogNoisyExpectedImprovement"
ANALYTIC_SINGLE_OBJECTIVE = "LogExpectedImprovement"
PREDICTIVE_SINGLE_OBJECTIVE = "LogExpectedImprovement(predictive)"
MULTI_OBJECTIVE = "qLogNoisyExpectedHypervolumeImprovement"
# BoTorch's default temperature of the constraints' smoothed indicator for both acquisitions, passed
# explicitly because `SuccessWeight` is built for exactly this value.
CONSTRAINT_ETA = 1e-3
# How the classifier's output weighs the acquisition (a planner option, `feasibility_weight`):
# "probability" by P(the sample works), "majority" by P(working is more likely than not), version 2's.
FEASIBILITY_WEIGHTS = ("probability", "majority")
DEFAULT_FEASIBILITY_WEIGHT = "majority"


@dataclass(frozen=True)
class OutcomeBound:
    """Constraint callable for `output[index] op bound` on samples: <= 0 where it holds."""

    index: int
    op: str
    bound: float

    def __call__(self, samples: Tensor) -> Tensor:
        value = samples[..., self.index]
        return self.bound - value if self.op == ">=" else value - self.bound


def inverse_fatmoid(p: Tensor) -> Tensor:
    """x with fatmoid(x) == p for p in (0, 1). fatmoid(-x) = 1 - fatmoid(x), so one branch serves both
    halves; the closed form inverts its `2/3 * cauchy(x - 1/sqrt(3))` left half."""
    q = torch.minimum(p, 1.0 - p)
    magnitude = torch.sqrt(2.0 / (3.0 * q) - 1.0) - 1.0 / math.sqrt(3.0)
    return torch.where(p < 0.5, -magnitude, magnitude)


@dataclass(frozen=True)
class SuccessWeight:
    """Constraint callable that weighs each posterior sample of the classifier's latent f by Phi(f).

    BoTorch weighs a sample by fatmoid(-c / eta) of a constraint's value c; with c = -eta *
    fatmoid^-1(Phi(f)) that weight is exactly Phi(f), the sample's probability that the film works, and
    its average over samples is P(success) = E[Phi(f)]. The acquisition is then the expected improvement
    times the probability of working (constrained EI, Gardner et al. 2014). A plain `latent >= 0` bound
    would weigh by P(f >= 0) instead, which is ~1 wherever the classifier is sure of a 70 % success rate.
    c <= 0 exactly where Phi(f) >= 0.5, so the incumbent (BoTorch's hard feasibility test) is unchanged.
    """

    index: int
    eta: float = CONSTRAINT_ETA

    def __call__(self, samples: Tensor) -> Tensor:
        # Clamped so Phi(f) of far-out samples stays a finite weight (1e-12 is log -27.6, not -inf).
        p = torch.special.ndtr(samples[..., self.index]).clamp(1e-12, 1.0 - 1e-12)
        return -self.eta * inverse_fatmoid(p)


def first_output(samples: Tensor, X: Tensor | None = None) -> Tensor:
    return samples[..., 0]


def constraint_callables(
    problem: Problem, fitted: FittedModels, feasibility_weight: str
) -> list[OutcomeBound | SuccessWeight]:
    """Outcome constraints in model units, plus the feasibility weight when failures were observed
    (`FEASIBILITY_WEIGHTS`; a regression GP on 0/1 labels is always thresholded at 0.5)."""
    bounds: list[OutcomeBound | SuccessWeight] = []
    for c in problem.outcome_constraints:
        index = fitted.index(c.name)
        if index is None:  # never measured: `build_training_data` already noted that it is ignored
            continue
        converted = fitted.outcomes[index].bound_to_model(c.op, c.bound)
        if converted is not None:
            bounds.append(OutcomeBound(index, *converted))
    feasibility = fitted.index(FEASIBILITY)
    if feasibility is not None and fitted.feasibility == "classifier" and feasibility_weight == "probability":
        bounds.append(SuccessWeight(feasibility))
    elif feasibility is not None:
        bounds.append(OutcomeBound(feasibility, ">=", fitted.feasibility_threshold))
    return bounds


def describe_constraint(fitted: FittedModels, bound: OutcomeBound | SuccessWeight) -> str:
    name = fitted.outcomes[bound.index].name
    if isinstance(bound, SuccessWeight):
        return f"weighted by P({name}) (classifier)"
    return f"{name} {bound.op} {bound.bound:.6g} (model units)"


def reference_point(problem: Problem, fitted: FittedModels, data: TrainingData) -> list[float]:
    """The protocol's reference point in model units, or one inferred just below the observed Pareto front."""
    objectives = fitted.outcomes[: len(problem.objectives)]
    if problem.reference_point is not None:
        return [o.to_model(problem.reference_point[o.name]) for o in objectives]
    Y = data.objective_Y
    if Y.shape[0] == 0:  # no point has every objective: use each objective's worst value seen
        Y = torch.tensor([[float(y.min()) for y in data.Y[: len(objectives)]]], dtype=DTYPE)
    pareto = Y[is_non_dominated(Y)]
    return infer_reference_point(pareto).tolist()


class PredictiveLogExpectedImprovement(LogExpectedImprovement):
    """Analytic LogEI of the next *measured* value: the posterior of f plus the fitted noise.

    Latent-f EI scores a point by how uncertain the function is there, so in a noisy table it keeps
    sending trials to empty corners while the region that holds the best rows, already sampled and
    hence "known", looks worthless. The value a trial reveals is f plus noise, so its spread includes
    the noise; scoring that against the best value measured so far keeps a promising noisy region in play.
    """

    def _mean_and_sigma(
        self, X: Tensor, compute_sigma: bool = True, min_var: float = 1e-12
    ) -> tuple[Tensor, Tensor | None]:
        self.to(X)
        posterior = self.model.posterior(X=X, posterior_transform=self.posterior_transform, observation_noise=True)
        # `Posterior` declares no mean/variance, though every concrete posterior has them (BoTorch's own
        # `_mean_and_sigma`, which this overrides, reads them the same way).
        mean = posterior.mean.squeeze(-2)  # type: ignore[attr-defined]
        if not compute_sigma:
            return mean, None
        variance = posterior.variance  # type: ignore[attr-defined]
        return mean, variance.clamp_min(min_var).sqrt().view(mean.shape)


@dataclass
class Acquisition:
    function: AcquisitionFunction
    name: str
    settings: dict[str, Any]  # JSON-ready: what a reader needs to re-derive the decision


def build_acquisition(
    problem: Problem,
    fitted: FittedModels,
    data: TrainingData,
    X_pending: Tensor,
    seed: int,
    mc_samples: int,
    analytic_ei: bool = False,
    predictive: bool = False,
    feasibility_weight: str = DEFAULT_FEASIBILITY_WEIGHT,
) -> Acquisition:
    """The acquisition function for `problem`, its name and settings for provenance.

    `analytic_ei`: when only one objective is modelled (no outcome constraints, no feasibility model)
    and nothing is pending, use analytic LogEI against the best posterior mean at the observed points
    instead of Monte-Carlo noisy LogEI. Each candidate is then scored on its own marginal posterior, so
    a pool of tens of thousands of rows costs one posterior call rather than one joint posterior per row.
    Only meaningful for one proposal at a time (q = 1). With `predictive` as well, the improvement is
    that of the next measured value (noise included) over the best value measured so far
    (`PredictiveLogExpectedImprovement`). `feasibility_weight`: see `FEASIBILITY_WEIGHTS`.
    """
    bounds = constraint_callables(problem, fitted, feasibility_weight)
    settings: dict[str, Any]
    acq: AcquisitionFunction
    if analytic_ei and len(fitted.outcomes) == 1 and len(problem.objectives) == 1 and X_pending.shape[0] == 0:
        if predictive:
            best_f = float(data.Y[0].max())
            settings = {"best_f": best_f, "incumbent": "best measured value (model units)", "noise": "included"}
            acq = PredictiveLogExpectedImprovement(fitted.model, best_f=best_f)
            return Acquisition(acq, PREDICTIVE_SINGLE_OBJECTIVE, settings)
        with torch.no_grad():
            # `Posterior` declares no mean, though every concrete posterior has one.
            best_f = float(fitted.model.posterior(data.baseline).mean.max())  # type: ignore[attr-defined]
        settings = {"best_f": best_f, "incumbent": "best posterior mean at observed points (model units)"}
        return Acquisition(LogExpectedImprovement(fitted.model, best_f=best_f), ANALYTIC_SINGLE_OBJECTIVE, settings)
    sampler = SobolQMCNormalSampler(torch.Size([mc_samples]), seed=derive_seed(seed, "mc") % 2**31)
    settings = {
        "mc_samples": mc_samples,
        "constraints": [describe_constraint(fitted, b) for b in bounds],
        "n_baseline": int(data.baseline.shape[0]),
        "n_pending": int(X_pending.shape[0]),
    }
    n_objectives = len(problem.objectives)
    extra_outputs = len(fitted.outcomes) > n_objectives
    constraints: list[Callable[[Tensor], Tensor]] | None = list(bounds) or None
    if n_objectives == 1:
        acq = qLogNoisyExpectedImprovement(
            fitted.model,
            X_baseline=data.baseline,
            sampler=sampler,
            objective=GenericMCObjective(first_output) if extra_outputs else None,
            constraints=constraints,
            eta=CONSTRAINT_ETA,
            X_pending=X_pending if X_pending.shape[0] else None,
            prune_baseline=True,
        )
        return Acquisition(acq, SINGLE_OBJECTIVE, settings)
    ref_point = reference_point(problem, fitted, data)
    settings["reference_point"] = ref_point  # model units: log10 where declared, negated when minimized
    acq = qLogNoisyExpectedHypervolumeImprovement(
        fitted.model,
        ref_point=ref_point,
        X_baseline=data.baseline,
        sampler=sampler,
        objective=IdentityMCMultiOutputObjective(outcomes=list(range(n_objectives)))
        if extra_outputs
        else None,
        constraints=constraints,
        eta=CONSTRAINT_ETA,
        X_pending=X_pending if X_pending.shape[0] else None,
        prune_baseline=True,
    )
    return Acquisition(acq, MULTI_OBJECTIVE, settings)


def pointwise_values(acq: AcquisitionFunction, X: Tensor) -> list[float | None]:
    """Each point's acquisition value on its own (given the pending points); None if not finite."""
    if X.shape[0] == 0:
        return []
    with torch.no_grad():
        values = acq(X.unsqueeze(1)).tolist()
    return [v if math.isfinite(v) else None for v in values]
