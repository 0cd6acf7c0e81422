"""The model's view for a report: the planner's own GP refitted on the campaign's data, shown as
posterior slices through the best point and leave-one-out predictions for every measured trial.

The GP is built by `planners.outcomes.build_training_data` and `planners.models.fit_models`, exactly
as the planner builds it (same encoding, log scales, standardization, kernel), so what the report
shows is the model that made the decisions, not a look-alike.

Leave-one-out uses the exact closed form for a GP with fixed hyperparameters (Rasmussen & Williams,
GPML eq. 5.12): with K the training covariance plus noise and alpha = K^-1 (y - m),
mu_i = y_i - alpha_i / [K^-1]_ii and var_i = 1 / [K^-1]_ii. No refits, one matrix inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from torch import Tensor

from closedloop.controller.engine import history
from closedloop.controller.report.data import ReportData
from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.models import DEFAULT_KERNEL, check_kernel, fit_models, resolve_kernel
from closedloop.planners.outcomes import NoUsableData, Outcome, build_training_data
from closedloop.planners.sampling import isolated_rng
from closedloop.planners.space import ChoiceParameter, Conditions

GRID_POINTS = 61
MIN_POINTS = 3  # fewer measured values than this tell nothing about a GP's trustworthiness
BAND_SIGMAS = 2.0


@dataclass
class Slice:
    """Posterior of one objective along one parameter, the other parameters held at the best point."""

    objective: str
    parameter: str
    x: list[float | str]
    mean: list[float]  # objective units
    lower: list[float]  # mean -/+ BAND_SIGMAS sd, mapped to objective units
    upper: list[float]
    at: float | str  # the best point's value of this parameter


@dataclass
class LeaveOneOut:
    objective: str
    trial_ids: list[int]
    measured: list[float]
    predicted: list[float]
    lower: list[float]
    upper: list[float]


@dataclass
class ModelView:
    best: Conditions | None = None
    slices: list[Slice] = field(default_factory=list)
    loo: list[LeaveOneOut] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def model_view(data: ReportData) -> ModelView:
    """Fit the planner's GP to the campaign and describe it; a campaign too small for a GP gives notes."""
    problem = data.problem
    obs = history.observations(problem, data.trials)
    usable = [o for o in obs if not o.failed]
    if len(usable) < MIN_POINTS:
        return ModelView(notes=[f"no model view: {len(usable)} successful measurement(s), a GP needs at least {MIN_POINTS}"])
    encoding = SpaceEncoding(problem.space)
    options = data.protocol.planner.options or {}
    kernel = str(options.get("kernel", DEFAULT_KERNEL))
    view = ModelView()
    try:
        check_kernel(kernel)
    except ValueError:
        view.notes.append(f"planner kernel {kernel!r} unknown here; shown with the default {DEFAULT_KERNEL} kernel")
        kernel = DEFAULT_KERNEL
    if options.get("power_transform"):
        view.notes.append("the planner power-warps objectives; this view models them without the warp")
    if options.get("pad_failures", True) and len(usable) < len(obs):
        view.notes.append(
            "the planner also gives its objective models each failed sample at the worst value seen; "
            "this view models the measured values only"
        )
    try:
        training = build_training_data(problem, encoding, obs)
    except NoUsableData as exc:
        return ModelView(notes=[f"no model view: {exc}"])
    with isolated_rng(data.info["seed"]):
        choices = any(isinstance(p, ChoiceParameter) for p in problem.space.parameters)
        fitted = fit_models(training, kernel=resolve_kernel(kernel, bool(problem.outcome_constraints), choices),
                            groups=encoding.column_groups())
    view.notes += fitted.notes + training.notes
    best = history.best(problem, obs)
    view.best = None if best is None else dict(best.conditions)
    # Not every result is an observation: an expired film, a warm-start row far outside the space.
    result_ids = history.observed_ids(problem, data.trials)
    for i, outcome in enumerate(fitted.outcomes[: len(problem.objectives)]):
        gp = fitted.model.models[i] if isinstance(fitted.model, ModelListGP) else fitted.model
        # An objective is always a SingleTaskGP (`fit_gp`); only the feasibility outcome is a classifier.
        assert isinstance(gp, SingleTaskGP)
        if view.best is not None:
            view.slices += _slices(encoding, gp, outcome, view.best)
        view.loo.append(_leave_one_out(gp, outcome, _training_ids(obs, result_ids, outcome)))
    return view


def to_objective_units(outcome: Outcome, model_value: float) -> float:
    """Invert `Outcome.to_model` (without a warp): undo the sign, then the log10."""
    v = outcome.sign * model_value
    return 10.0**v if outcome.log else v


def _band(outcome: Outcome, mean: Tensor, var: Tensor) -> tuple[list[float], list[float], list[float]]:
    sd = var.clamp_min(0).sqrt()
    lo = [to_objective_units(outcome, float(v)) for v in mean - BAND_SIGMAS * sd]
    hi = [to_objective_units(outcome, float(v)) for v in mean + BAND_SIGMAS * sd]
    mid = [to_objective_units(outcome, float(v)) for v in mean]
    # A minimized objective is negated in model units: its lower model bound is its upper value.
    lower = [min(a, b) for a, b in zip(lo, hi, strict=True)]
    upper = [max(a, b) for a, b in zip(lo, hi, strict=True)]
    return mid, lower, upper


def _slices(encoding: SpaceEncoding, gp: SingleTaskGP, outcome: Outcome, best: Conditions) -> list[Slice]:
    x0 = encoding.encode([best])[0]
    out = []
    for p in encoding.space.parameters:
        if p.name in encoding.numeric_by_name:
            column = encoding.numeric_by_name[p.name]
            grid = torch.linspace(0.0, 1.0, GRID_POINTS, dtype=x0.dtype)
            X = x0.repeat(GRID_POINTS, 1)
            X[:, column.column] = grid
            xs: list[float | str] = [column.from_unit(float(g)) for g in grid]
        elif isinstance(p, ChoiceParameter):
            group = next(ch for ch in encoding.choices if ch.parameter.name == p.name)
            X = x0.repeat(len(p.values), 1)
            X[:, list(group.columns)] = torch.eye(len(p.values), dtype=x0.dtype)
            xs = list(p.values)
        else:
            continue  # fixed: one value, nothing to show
        with torch.no_grad():
            posterior = gp.posterior(X)
            mean, var = posterior.mean.squeeze(-1), posterior.variance.squeeze(-1)
        mid, lower, upper = _band(outcome, mean, var)
        out.append(Slice(outcome.name, p.name, xs, mid, lower, upper, best[p.name]))
    return out


def _training_ids(obs: list, result_ids: list[int], outcome: Outcome) -> list[int]:
    """The trial ids of `outcome`'s training rows, in the order build_training_data took them."""
    return [
        tid
        for tid, o in zip(result_ids, obs, strict=True)
        if not o.failed and outcome.name in o.values and outcome.usable(float(o.values[outcome.name]))
    ]


def _leave_one_out(gp: SingleTaskGP, outcome: Outcome, trial_ids: list[int]) -> LeaveOneOut:
    gp.eval()
    X = gp.train_inputs[0]
    y = gp.train_targets  # standardized model units
    with torch.no_grad():
        K = gp.covar_module(X).to_dense() + gp.likelihood.noise.mean() * torch.eye(len(y), dtype=X.dtype)
        residual = y - gp.mean_module(X)
        K_inv = torch.cholesky_inverse(torch.linalg.cholesky(K))
        precision = torch.diagonal(K_inv)
        mu = y - (K_inv @ residual) / precision
        var = 1.0 / precision
        standardize = gp.outcome_transform
        assert isinstance(standardize, Standardize)  # `planners.models._new_gp` always standardizes
        mean, variance = standardize.untransform(mu.unsqueeze(-1), var.unsqueeze(-1))
        assert variance is not None  # given a variance, Standardize returns one
        measured, _ = standardize.untransform(y.unsqueeze(-1))
    mid, lower, upper = _band(outcome, mean.squeeze(-1), variance.squeeze(-1))
    truth = [to_objective_units(outcome, float(v)) for v in measured.squeeze(-1)]
    if len(trial_ids) != len(truth):  # a GP conditioned on a subset; ids would mislead
        trial_ids = list(range(1, len(truth) + 1))
    return LeaveOneOut(outcome.name, trial_ids, truth, mid, lower, upper)


def loo_summary(loo: LeaveOneOut) -> str:
    """A one-line verdict on the leave-one-out predictions: coverage of the band and rank correlation."""
    n = len(loo.measured)
    if n == 0:
        return "no leave-one-out predictions"
    inside = sum(lo <= m <= hi for m, lo, hi in zip(loo.measured, loo.lower, loo.upper, strict=True))
    text = f"{inside} of {n} measured values inside the predicted ±{BAND_SIGMAS:g} sd band"
    if n >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr(loo.measured, loo.predicted).statistic
        if math.isfinite(rho):
            text += f"; rank correlation of predicted vs measured {rho:.2f}"
    return text
