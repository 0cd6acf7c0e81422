"""The model-based planner: a space-filling initial design, then GP + noisy (hypervolume) log-EI.

One call is a pure function of its arguments: the global torch generator is forked and seeded
for the duration (BoTorch draws restarts from it), every other draw has its own derived seed.
Nothing fails loudly on bad data: if the data cannot support a model, or a fit or the optimizer
breaks, the planner falls back to the space-filling design and says so in `provenance.fallback`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch

from closedloop.planners.acquisition import (
    DEFAULT_FEASIBILITY_WEIGHT,
    FEASIBILITY_WEIGHTS,
    build_acquisition,
    pointwise_values,
)
from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.forest import ACQUISITION as FOREST_ACQUISITION
from closedloop.planners.forest import forest_scores, top_rows
from closedloop.planners.models import (
    DEFAULT_KERNEL,
    check_feasibility,
    check_kernel,
    fit_models,
    resolve_kernel,
)
from closedloop.planners.optimize import OptimizerSettings, optimize_over_points, optimize_relaxed
from closedloop.planners.outcomes import NoUsableData, TrainingData, build_training_data, check_problem
from closedloop.planners.pool import candidate_pool
from closedloop.planners.pool_view import PoolView, pool_view
from closedloop.planners.provenance import Proposal, Provenance, base_provenance, check_request
from closedloop.planners.repair import enumerate_legal, make_legal
from closedloop.planners.sampling import isolated_rng
from closedloop.planners.sobol import check_n_initial, initial_design, space_filling
from closedloop.planners.space import ChoiceParameter, Conditions, Observation, Problem
from closedloop.planners.surrogate_choice import check_surrogate, choose_surrogate


@dataclass
class _Step:
    """What one model-based step produced, for the proposals and their provenance."""

    points: list[Conditions]
    values: list[float | None]
    acquisition: str
    acquisition_settings: dict[str, Any]
    hyperparameters: dict[str, Any]
    fit_time_s: float
    optimize_time_s: float
    fallbacks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class BotorchPlanner:
    """An initial design until `n_initial` observations exist, then Bayesian optimisation.

    `provenance.design` says which: "initial", "model", or "fallback" (the model step could not
    run, see `provenance.fallback`; a space-filling point was used instead).

    Example:
        >>> from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace
        >>> problem = Problem(SearchSpace((FloatParameter("x", 0.0, 1.0),)), (Objective("y"),))
        >>> seen = [Observation({"x": x}, {"y": -(x - 0.3) ** 2}) for x in (0.0, 0.5, 0.9)]
        >>> (proposal,) = BotorchPlanner(n_initial=2).propose(problem, seen, pending=[], n=1, seed=7)
        >>> proposal.provenance.design, 0.0 <= proposal.conditions["x"] <= 1.0
        ('model', True)
    """

    name = "botorch"
    # 2: failed samples by a GP classifier and floor padding; 3: kernel "auto" (Matern-5/2 mostly), pools
    # screened for qLogNEI, constant and duplicated pool columns dropped, a random forest on wide pools
    # (planners.registry.OLD_DEFAULTS)
    version = "3"

    def __init__(
        self,
        n_initial: int = 8,
        initial_method: str = "sobol",
        num_restarts: int = 6,
        raw_samples: int = 192,
        mc_samples: int = 128,
        fit_maxiter: int = 100,
        max_fit_points: int = 300,
        optimizer_maxiter: int = 200,
        max_choice_combinations: int = 8,
        power_transform: bool = False,
        kernel: str = DEFAULT_KERNEL,
        analytic_ei: bool = False,
        predictive_ei: bool = False,
        pad_failures: bool = True,
        feasibility: str = "classifier",
        feasibility_weight: str = DEFAULT_FEASIBILITY_WEIGHT,
        surrogate: str = "auto",
        pool_screen: int = 512,
    ) -> None:
        """Options beyond the optimizer's budget (all off by default):

        power_transform: fit the GP to Yeo-Johnson-warped objectives, robust to skew and outliers
            (`planners.warping`).
        kernel: "auto" (default since version 3: "matern52", or "rbf" when the problem has outcome
            constraints or choice parameters; `planners.models.resolve_kernel` says why), "matern52" (Gamma
            lengthscale priors with mean 0.5, BoTorch's default before 0.12), "rbf" (BoTorch's default since,
            a lengthscale prior that grows with the dimension), "scaled_matern" (Matern-5/2 with such a prior
            and a low-noise prior, BayBE's default GP; ahead on the mixed benchmark space and two of three
            process pools, behind on TRMC and Perovskite), "rbf_gamma_numeric" ("rbf" with that Gamma
            lengthscale prior on the number columns only), or "additive": per-parameter terms plus a full one,
            for quantities that are (in model units) close to a sum of per-parameter effects
            (`planners.models.KERNELS`). The kernel fitted is in each proposal's acquisition settings.
        analytic_ei: for one objective without outcome constraints, proposing one point at a time with
            nothing pending, analytic LogEI instead of Monte-Carlo noisy LogEI: much cheaper over large
            candidate pools (`planners.acquisition.build_acquisition`).
        predictive_ei: with analytic_ei, score the next measured value (noise included) against the
            best measured value rather than the latent function against the best posterior mean
            (`planners.acquisition.PredictiveLogExpectedImprovement`).
        pad_failures: also give each objective's GP the failed samples, at the worst value measured so far
            ("floor padding", Wakabayashi et al. 2022, for failed MBE growths; on by default). Without it
            a failure adds nothing to the objective model, whose uncertainty there never shrinks, so the
            acquisition keeps returning to where samples fail however unlikely the classifier says
            success is.
        feasibility: how failed samples are modelled: "classifier" (default, a GP classifier,
            `planners.feasibility`) or "regression" (a GP on 0/1 labels, the model before 2026-11).
        feasibility_weight: how the classifier weighs the acquisition where samples may fail:
            "majority" (default: times P(working is more likely than not)) or "probability" (times
            P(the sample works), constrained EI: `planners.acquisition.SuccessWeight`; README measures both).
        surrogate: the model of a step over a candidate pool: "gp", "forest" (a random forest, the trees'
            mean and spread scored by log-EI, `planners.forest`), or "auto" (default): the forest where a
            pool has more than `planners.surrogate_choice.FOREST_MIN_COLUMNS` informative columns, the GP
            otherwise. Outside pool mode, and for several objectives or outcome constraints, always the GP.
            Each pool proposal's provenance notes say which and why.
        pool_screen: over a pool of more rows than this, Monte-Carlo noisy EI (the default acquisition)
            is evaluated on the `pool_screen` rows of highest analytic LogEI only (0: on every row), so a
            proposal over 18,000 rows costs well under a second (`planners.pool_view.PoolView.screened`).
        In pool mode, input columns constant over the pool and the data, or duplicating another column,
        are left out of the model (`planners.columns`), and the provenance notes name them.
        """
        check_n_initial(n_initial)
        check_kernel(kernel)
        check_feasibility(feasibility)
        check_surrogate(surrogate)
        if feasibility_weight not in FEASIBILITY_WEIGHTS:
            raise ValueError(
                f"botorch planner option feasibility_weight must be one of {list(FEASIBILITY_WEIGHTS)}, "
                f"got {feasibility_weight!r}"
            )
        flags = (
            ("power_transform", power_transform),
            ("analytic_ei", analytic_ei),
            ("predictive_ei", predictive_ei),
            ("pad_failures", pad_failures),
        )
        for label, flag in flags:
            if not isinstance(flag, bool):
                raise ValueError(f"botorch planner option {label} must be true or false, got {flag!r}")
        for label, value in (
            ("mc_samples", mc_samples),
            ("fit_maxiter", fit_maxiter),
            ("max_fit_points", max_fit_points),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"botorch planner option {label} must be a positive int, got {value!r}")
        if not isinstance(pool_screen, int) or isinstance(pool_screen, bool) or pool_screen < 0:
            raise ValueError(f"botorch planner option pool_screen must be an int >= 0, got {pool_screen!r}")
        self.n_initial = n_initial
        self.initial_method = initial_method
        self._initial = initial_design(initial_method)
        self.mc_samples = mc_samples
        self.fit_maxiter = fit_maxiter
        self.max_fit_points = max_fit_points
        self.power_transform = power_transform
        self.kernel = kernel
        self.analytic_ei = analytic_ei
        self.predictive_ei = predictive_ei
        self.pad_failures = pad_failures
        self.feasibility = feasibility
        self.feasibility_weight = feasibility_weight
        self.surrogate = surrogate
        self.pool_screen = pool_screen
        self.settings = OptimizerSettings(
            num_restarts, raw_samples, optimizer_maxiter, max_choice_combinations
        )

    def propose(
        self,
        problem: Problem,
        observations: Sequence[Observation],
        pending: Sequence[Conditions],
        n: int,
        seed: int,
        candidates: pd.DataFrame | None = None,
        pending_fidelities: Sequence[str | None] = (),
    ) -> list[Proposal]:
        check_request(n)
        check_problem(problem)
        encoding = SpaceEncoding(problem.space)
        existing = [o.conditions for o in observations] + list(pending)
        provenance = base_provenance(self.name, self.version, seed, observations, pending)
        pool = search_pool(encoding, existing, candidates)
        if n == 0 or (pool is not None and len(pool) == 0):
            return []
        with isolated_rng(seed):
            if len(observations) < self.n_initial:
                provenance = replace(provenance, acquisition=self.initial_method, design="initial")
                return _proposals(self._initial(encoding, existing, n, seed, pool), provenance)
            try:
                step = self._model_step(problem, encoding, observations, pending, existing, n, seed, pool)
            except NoUsableData as error:
                provenance = replace(provenance, acquisition="sobol", design="fallback", fallback=f"{error}; used Sobol")
                return _proposals(space_filling(encoding, existing, n, seed, pool), provenance)
            except Exception as error:  # noqa: BLE001 - a broken fit or optimizer must not stop a campaign
                message = f"model-based step failed ({type(error).__name__}: {error}); used Sobol"
                provenance = replace(provenance, acquisition="sobol", design="fallback", fallback=message)
                return _proposals(space_filling(encoding, existing, n, seed, pool), provenance)
        provenance = replace(
            provenance,
            acquisition=step.acquisition,
            acquisition_settings=step.acquisition_settings,
            design="model",
            hyperparameters=step.hyperparameters,
            fit_time_s=step.fit_time_s,
            optimize_time_s=step.optimize_time_s,
            fallback="; ".join(step.fallbacks) or None,
            notes=tuple(step.notes),
        )
        return _proposals(step.points, provenance, step.values)

    def _model_step(
        self,
        problem: Problem,
        encoding: SpaceEncoding,
        observations: Sequence[Observation],
        pending: Sequence[Conditions],
        existing: list[Conditions],
        n: int,
        seed: int,
        pool: Sequence[Conditions] | None,
    ) -> _Step:
        started = time.perf_counter()
        data = build_training_data(problem, encoding, observations, self.power_transform, self.pad_failures)
        X_pending = encoding.encode(pending)
        X_pending = X_pending[torch.isfinite(X_pending).all(dim=-1)]
        view = pool_view(encoding, pool, data, X_pending) if pool is not None else None
        inputs = len(encoding.column_groups()) if view is None else len(view.groups(encoding.column_groups()))
        choice = choose_surrogate(self.surrogate, problem, observations, pool is not None, inputs)
        notes = data.notes + ([] if view is None else view.selection.notes())
        if pool is not None or self.surrogate != "auto":
            notes.append(choice.reason)
        if view is not None and choice.surrogate == "forest":
            return self._forest_step(view, data, n, seed, started, notes)
        groups = encoding.column_groups()
        if view is not None:
            data, X_pending, groups = view.selection.training(data), view.selection.apply(X_pending), view.groups(groups)
        choices = any(isinstance(p, ChoiceParameter) for p in problem.space.parameters)
        kernel = resolve_kernel(self.kernel, bool(problem.outcome_constraints), choices)
        fitted = fit_models(data, self.fit_maxiter, self.max_fit_points, kernel, self.feasibility, groups)
        fitted_at = time.perf_counter()
        acquisition = build_acquisition(
            problem,
            fitted,
            data,
            X_pending,
            seed,
            self.mc_samples,
            self.analytic_ei and n == 1,
            self.predictive_ei,
            self.feasibility_weight,
        )
        acq = acquisition.function
        fallbacks = list(fitted.notes)
        settings = acquisition.settings | self.settings.as_provenance(None if pool is not None else encoding) | {"kernel": kernel}
        if view is not None:
            rows, screened = view.screened(acquisition.name, fitted, data, self.pool_screen)
            settings |= screened
            points = [view.pool[int(rows[i])] for i in optimize_over_points(acq, view.choices[rows], n)]
        else:
            relaxed = encoding.decode(optimize_relaxed(acq, encoding, n, self.settings))
            points, replaced = _legal_and_new(
                encoding, [make_legal(encoding, r) for r in relaxed], existing, seed
            )
            if replaced:
                fallbacks.append(
                    f"{replaced} optimized point(s) could not be made legal or repeated a known point; used Sobol for them"
                )
        X_points = encoding.encode(points)
        values = pointwise_values(acq, X_points if view is None else view.selection.apply(X_points))
        return _Step(
            points,
            values,
            acquisition.name,
            settings,
            fitted.hyperparameters,
            fit_time_s=fitted_at - started,
            optimize_time_s=time.perf_counter() - fitted_at,
            fallbacks=fallbacks,
            notes=notes + fitted.remarks,
        )

    def _forest_step(
        self, view: PoolView, data: TrainingData, n: int, seed: int, started: float, notes: list[str]
    ) -> _Step:
        """The forest's pick: the pool rows of highest log-EI (`planners.forest`)."""
        X, y = view.selection.training(data).X[0], data.Y[0]
        scores = forest_scores(X.numpy(), y.numpy().ravel(), view.choices.numpy(), seed)
        fitted_at = time.perf_counter()
        picked = top_rows(scores.log_ei, n)
        if n > 1:
            notes.append(f"the forest proposes the {n} rows of highest EI; it does not model them as pending")
        return _Step(
            [view.pool[i] for i in picked],
            [float(scores.log_ei[i]) for i in picked],
            FOREST_ACQUISITION,
            scores.settings | {"optimizer": "every pool row scored", "n_candidates": len(view.pool)},
            {},
            fit_time_s=fitted_at - started,
            optimize_time_s=time.perf_counter() - fitted_at,
            notes=notes,
        )


def search_pool(
    encoding: SpaceEncoding, existing: Sequence[Conditions], candidates: pd.DataFrame | None
) -> Sequence[Conditions] | None:
    """The points a proposal must come from: the candidate table's rows not yet observed or pending, all
    legal points of a small fully discrete space not yet seen (a pool too), or None (search the space)."""
    if candidates is not None:
        return candidate_pool(encoding.space, candidates, existing)
    return _unseen_points(encoding, existing)


def _unseen_points(encoding: SpaceEncoding, existing: Sequence[Conditions]) -> list[Conditions] | None:
    """All legal points of a small fully discrete space not yet observed or pending; None otherwise."""
    points = enumerate_legal(encoding)
    if points is None:
        return None
    seen = {point_key(encoding.space, c) for c in existing}
    return [p for p in points if point_key(encoding.space, p) not in seen]


def _legal_and_new(
    encoding: SpaceEncoding, points: list[Conditions | None], existing: list[Conditions], seed: int
) -> tuple[list[Conditions], int]:
    """Keep legal points that repeat nothing known; replace the rest by space-filling points."""
    seen = {point_key(encoding.space, c) for c in existing}
    kept: list[Conditions] = []
    for point in points:
        if point is not None and point_key(encoding.space, point) not in seen:
            seen.add(point_key(encoding.space, point))
            kept.append(point)
    replaced = len(points) - len(kept)
    if replaced:
        kept += space_filling(encoding, existing + kept, replaced, seed)
    return kept, replaced


def _proposals(
    points: Sequence[Conditions], provenance: Provenance, values: Sequence[float | None] | None = None
) -> list[Proposal]:
    return [
        Proposal(point, replace(provenance, acquisition_value=None if values is None else values[i]))
        for i, point in enumerate(points)
    ]
