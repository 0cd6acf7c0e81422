"""The multi-fidelity planner: one multi-task GP over every source of the objective, and a cost-aware
choice of where and with which source to measure next.

Each model step (1) fits a multi-task GP (`planners.multitask_model`; task = fidelity, each source's
values standardized within it) and, when samples failed, the botorch planner's feasibility classifier over
all sources; (2) chooses the conditions by noisy log-EI of the *target* (pending points enter as X_pending,
at the target: their source is not known to the planner); (3) chooses the source at those conditions by
target-variance reduction per instrument-hour, with guards against starving the target
(`planners.fidelity_choice`). The initial design measures `n_initial` space-filling points with the
cheapest proxy, then the `n_initial_target` best of them again with the target, so the task correlation is
learned from pairs (and the proxy's best is measured by the target at once). Encoding, constraints, ints and choices, failed samples, seeding,
fallbacks and provenance are the botorch planner's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from botorch.models import ModelListGP

from closedloop.planners.acquisition import DEFAULT_FEASIBILITY_WEIGHT, build_acquisition, pointwise_values
from closedloop.planners.botorch_planner import BotorchPlanner, _legal_and_new, _proposals, search_pool
from closedloop.planners.encoding import DTYPE, SpaceEncoding
from closedloop.planners.feasibility import classifier_hyperparameters, fit_classifier
from closedloop.planners.fidelities import (
    Sources,
    check_fidelities,
    failure_labels,
    hours_since_target,
    task_training_data,
)
from closedloop.planners.fidelity_choice import FidelityGuards, choose_fidelity
from closedloop.planners.models import FittedModels
from closedloop.planners.multitask_model import fit_multitask, incumbent_candidates
from closedloop.planners.optimize import optimize_over_points, optimize_relaxed
from closedloop.planners.outcomes import FEASIBILITY, NoUsableData, Outcome, TrainingData, check_problem
from closedloop.planners.provenance import Proposal, Provenance, base_provenance, check_request
from closedloop.planners.repair import make_legal
from closedloop.planners.sampling import isolated_rng
from closedloop.planners.sobol import space_filling
from closedloop.planners.space import Conditions, Fidelity, Observation, Problem


@dataclass(frozen=True)
class _Call:
    """One propose call's checked arguments."""

    problem: Problem
    sources: Sources
    encoding: SpaceEncoding
    observations: Sequence[Observation]
    pending: Sequence[Conditions]
    pending_sources: Sequence[Fidelity]  # the source measuring each pending point (the target when unknown)
    n: int
    seed: int
    pool: Sequence[Conditions] | None
    provenance: Provenance


class MultiFidelityPlanner(BotorchPlanner):
    """Bayesian optimisation of the target source's objective, measuring cheap proxies where they inform it.

    Takes the botorch planner's options (same meaning; pad_failures is off by default here: a device that
    failed where its film worked, padded at the worst PCE, would tell the task model that film and device
    disagree there, and that correlation decides where films are used; and a smaller optimizer and fit
    budget, num_restarts 3, raw_samples 64, mc_samples 64, fit_maxiter 50: the multi-task model costs
    about twice the botorch planner's per decision) and three of its own:

    n_initial_target: target measurements in the initial design, at the best proxy-measured points (3: the
        fewest from which a correlation can be told from chance; each costs a full target
        measurement, so more would spend the budget the proxies are meant to save).
    min_correlation: a proxy whose learned correlation with the target is below this is not measured.
    proxy_share: at most this many target-costs of hours go to proxies between two target measurements.

    Every proposal's provenance names the source (`fidelity`) and why (`fidelity_reason`); the numbers
    behind the choice are in `acquisition_settings["fidelity"]`.
    """

    name = "multifidelity"
    version = "1"

    def __init__(
        self,
        n_initial: int = 8,
        initial_method: str = "sobol",
        num_restarts: int = 3,
        raw_samples: int = 64,
        mc_samples: int = 64,
        fit_maxiter: int = 50,
        max_fit_points: int = 500,
        optimizer_maxiter: int = 200,
        max_choice_combinations: int = 8,
        power_transform: bool = False,
        kernel: str = "rbf",
        analytic_ei: bool = False,
        predictive_ei: bool = False,
        pad_failures: bool = False,
        feasibility: str = "classifier",
        feasibility_weight: str = DEFAULT_FEASIBILITY_WEIGHT,
        n_initial_target: int = 3,
        min_correlation: float = 0.5,
        proxy_share: float = 0.5,
    ) -> None:
        super().__init__(
            n_initial, initial_method, num_restarts, raw_samples, mc_samples, fit_maxiter, max_fit_points,
            optimizer_maxiter, max_choice_combinations, power_transform, kernel, analytic_ei, predictive_ei,
            pad_failures, feasibility, feasibility_weight,
        )  # fmt: skip
        if isinstance(n_initial_target, bool) or not isinstance(n_initial_target, int) or n_initial_target < 2:
            raise ValueError(f"multifidelity planner option n_initial_target must be an int >= 2, got {n_initial_target!r}")
        for label, value in (("min_correlation", min_correlation), ("proxy_share", proxy_share)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"multifidelity planner option {label} must be a number in [0, 1], got {value!r}")
        self.n_initial_target = n_initial_target
        self.guards = FidelityGuards(float(min_correlation), float(proxy_share))

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
        sources = check_fidelities(problem)
        for observation in observations:
            sources.of(observation)  # an undeclared source is refused before anything is fitted
        if pending_fidelities and len(pending_fidelities) != len(pending):
            raise ValueError(f"pending_fidelities names {len(pending_fidelities)} source(s) for {len(pending)} pending point(s)")
        pending_sources = [sources.named(name) for name in pending_fidelities] or [sources.target] * len(pending)
        encoding = SpaceEncoding(problem.space)
        existing = [o.conditions for o in observations] + list(pending)
        pool = search_pool(encoding, existing, candidates)
        if n == 0 or (pool is not None and len(pool) == 0):
            return []
        provenance = base_provenance(self.name, self.version, seed, observations, pending, pending_fidelities)
        call = _Call(problem, sources, encoding, observations, pending, pending_sources, n, seed, pool, provenance)
        with isolated_rng(seed):
            initial = self._initial_step(call)
            if initial is not None:
                return initial
            try:
                return self._multitask_step(call)
            except Exception as error:  # noqa: BLE001 - a broken fit or optimizer must not stop a campaign
                why = str(error) if isinstance(error, NoUsableData) else f"model-based step failed ({type(error).__name__}: {error})"
                provenance = replace(
                    provenance, acquisition="sobol", design="fallback", fallback=f"{why}; used Sobol",
                    fidelity=sources.target.name,
                    fidelity_reason=f"{sources.target.name}: no model could be fitted, so the target is measured",
                )  # fmt: skip
                return _proposals(space_filling(encoding, existing, n, seed, pool), provenance)

    def _initial_step(self, call: _Call) -> list[Proposal] | None:
        """The initial design's proposals, or None once it is complete."""
        sources, encoding, observations, n, seed, pool = (
            call.sources, call.encoding, call.observations, call.n, call.seed, call.pool
        )  # fmt: skip
        provenance = replace(call.provenance, acquisition=self.initial_method, design="initial")
        existing = [o.conditions for o in observations] + list(call.pending)
        cheap = sources.cheapest
        measured_cheap = [o for o in observations if o.fidelity == cheap.name]
        target_usable = [o for o in observations if sources.of(o).target and not o.failed]
        # What is being measured counts towards the design: a line with devices a day in the making must
        # not start a new initial device for every film that passes while they are made.
        cheap_in_flight = sum(f.name == cheap.name for f in call.pending_sources)
        target_in_flight = sum(f.target for f in call.pending_sources)
        if len(measured_cheap) + cheap_in_flight < self.n_initial:
            why = f"{cheap.name}: initial design, {self.n_initial} {cheap.name} measurements to map the space cheaply"
            points = self._initial(encoding, existing, n, seed, pool)
            return _proposals(points, replace(provenance, fidelity=cheap.name, fidelity_reason=why))
        if len(target_usable) + target_in_flight >= self.n_initial_target:
            if target_usable or not target_in_flight:
                return None
            # The first target results are still being made (a day for a device): nothing relates the sources
            # yet, so the proxy maps the space meanwhile.
            why = (f"{cheap.name}: waiting for the first {sources.target.name} results ({target_in_flight} being "
                   f"measured); {cheap.name} measurements map the space meanwhile")
            # At most the proxy share of the target's cost meanwhile (as between target results later).
            room = self.guards.proxy_share * sources.target.cost - hours_since_target(sources, observations, call.pending_sources)
            points = space_filling(encoding, existing, min(n, max(0, int(room / cheap.cost + 1e-9))), seed, pool)
            return _proposals(points, replace(provenance, fidelity=cheap.name, fidelity_reason=why))
        why = (
            f"{sources.target.name}: initial design, {self.n_initial_target} {sources.target.name} results at the "
            f"best {cheap.name}-measured conditions, to learn how the two relate (and, if they do, to measure "
            f"the proxy's best as a {sources.target.name} at once)"
        )
        provenance = replace(provenance, fidelity=sources.target.name, fidelity_reason=why)
        # Pairs: the target at the proxy's best conditions not yet measured by the target. A lab measures its
        # best films as devices first; if the proxy tracks the target these may already be near the optimum,
        # and if it does not they are as good as any other points to learn that from.
        done = [o.conditions for o in observations if sources.of(o).target] + list(call.pending)
        ranked = sorted((o for o in measured_cheap if not o.failed and cheap.measures in o.values and o.conditions not in done),
                        key=lambda o: o.values[cheap.measures], reverse=call.problem.objectives[0].maximize)
        points = [o.conditions for o in ranked[:n]] if pool is None else []
        if len(points) < n:
            points += space_filling(encoding, existing + points, n - len(points), seed, pool)
        return _proposals(points, provenance)

    def _multitask_step(self, call: _Call) -> list[Proposal]:
        problem, sources, encoding, observations, pending, n, seed, pool = (
            call.problem, call.sources, call.encoding, call.observations, call.pending, call.n, call.seed, call.pool
        )  # fmt: skip
        started = time.perf_counter()
        tasks, notes = task_training_data(problem, sources, encoding, observations, self.power_transform, self.pad_failures)
        fit = fit_multitask(tasks, self.kernel, encoding.column_groups(), self.fit_maxiter)
        fallbacks = [] if fit.failure is None else [f"multi-task GP fit failed ({fit.failure}); used default hyperparameters"]
        hyperparameters: dict[str, Any] = {"multitask": fit.hyperparameters()}
        outcomes = [Outcome(problem.objectives[0].name)]
        model = fit.model
        labels = failure_labels(encoding, observations)
        if labels is not None:
            classifier, failure = fit_classifier(*labels, self.fit_maxiter)
            if failure is not None:
                fallbacks.append(f"classifier fit for {FEASIBILITY!r} failed ({failure}); used default hyperparameters")
            model = ModelListGP(fit.model, classifier)
            outcomes.append(Outcome(FEASIBILITY))
            hyperparameters[FEASIBILITY] = classifier_hyperparameters(classifier)
        fitted = FittedModels(model, outcomes, hyperparameters, fallbacks, [], self.feasibility)
        baseline = incumbent_candidates(fit)
        target_Y = tasks[0].Y
        data = TrainingData(outcomes, [tasks[0].X], [target_Y], baseline, target_Y, notes)
        fitted_at = time.perf_counter()
        X_pending = encoding.encode(pending)
        X_pending = X_pending[torch.isfinite(X_pending).all(dim=-1)]
        acquisition = build_acquisition(
            problem, fitted, data, X_pending, seed, self.mc_samples, self.analytic_ei and n == 1,
            self.predictive_ei, self.feasibility_weight,
        )  # fmt: skip
        acq = acquisition.function
        if pool is not None:
            points = [pool[i] for i in optimize_over_points(acq, encoding.encode(pool), n)]
        else:
            relaxed = encoding.decode(optimize_relaxed(acq, encoding, n, self.settings))
            # Conditions only a proxy has measured may be measured again, by the target: that is how a
            # promising film becomes a device. Pending and target-measured conditions are not repeated.
            measured = [o.conditions for o in observations if sources.of(o).target] + list(pending)
            points, replaced = _legal_and_new(encoding, [make_legal(encoding, r) for r in relaxed], measured, seed)
            if replaced:
                fallbacks.append(f"{replaced} optimized point(s) could not be made legal or repeated a known point; used Sobol for them")
        X = encoding.encode(points)
        values = pointwise_values(acq, X)
        proxy_hours = hours_since_target(sources, observations, call.pending_sources)
        base = replace(
            call.provenance,
            acquisition=acquisition.name,
            design="model",
            hyperparameters=hyperparameters,
            fit_time_s=fitted_at - started,
            fallback="; ".join(fallbacks) or None,
            notes=tuple(notes),
        )
        proposals = []
        target_in_flight = any(f.target for f in call.pending_sources)
        for i, point in enumerate(points):
            choice = choose_fidelity(sources, fit, X[i].to(DTYPE), proxy_hours, self.guards, target_in_flight)
            if choice is None:  # proxies have had their share; the target measurement in flight comes first
                continue
            target_in_flight = target_in_flight or choice.fidelity.target
            proxy_hours = 0.0 if choice.fidelity.target else proxy_hours + choice.fidelity.cost
            settings = acquisition.settings | self.settings.as_provenance(None if pool is not None else encoding)
            proposals.append(
                Proposal(point, replace(
                    base, acquisition_value=values[i], acquisition_settings=settings | {"fidelity": choice.settings},
                    fidelity=choice.fidelity.name, fidelity_reason=choice.reason,
                    optimize_time_s=time.perf_counter() - fitted_at,
                ))
            )  # fmt: skip
        return proposals


def fidelity_of(proposal: Proposal, problem: Problem) -> Fidelity:
    """The declared fidelity a proposal is to be measured with (its provenance names it)."""
    for fidelity in problem.fidelities:
        if fidelity.name == proposal.provenance.fidelity:
            return fidelity
    raise ValueError(f"proposal names fidelity {proposal.provenance.fidelity!r}, which the problem does not declare")
