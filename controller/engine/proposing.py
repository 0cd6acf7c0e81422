"""Proposing: the planner's calls (in line, or on the planning thread for a live line), abandoned
initial-design points offered again, and the trials `ask` hands out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from closedloop.controller.engine import history
from closedloop.controller.engine.events import (
    HANDED_OUT_TO,
    ErrorInfo,
    InitialPointOffered,
    PlannerFailed,
)
from closedloop.controller.engine.planahead import PlanRequest
from closedloop.controller.engine.reoffer import abandoned_initial_points
from closedloop.controller.engine.state import (
    HANDED_OUT_BEFORE,
    EngineState,
    Offered,
    planner_seed,
)
from closedloop.controller.store.reads import TrialRecord
from closedloop.planners.base import Planner
from closedloop.planners.provenance import Proposal, Provenance


class ProposalSource(EngineState):
    """The engine's part that turns the planner's proposals into stored trials."""

    @functools.cached_property
    def planner(self) -> Planner:
        return self._make_planner()

    @functools.cached_property
    def fallback_planner(self) -> Planner:
        return self._make_fallback()

    def _propose(self, n: int, *, within_budget: bool = True, origin: str | None = None) -> tuple[int, list[int]]:
        """(how many trials were proposed, the ids of those that passed the gate). Abandoned initial-design
        points come back before the planner is asked for more."""
        request, made, passed = self._plan_request(n, within_budget=within_budget, origin=origin)
        if request is None:
            return made, passed
        proposals = self._ask_planner(request)
        return made + len(proposals), passed + self._store_proposals(proposals, origin)

    def _plan_request(
        self, n: int, *, within_budget: bool = True, origin: str | None = None
    ) -> tuple[PlanRequest | None, int, list[int]]:
        """What the planner is to be asked for, after abandoned initial-design points come back (stored
        here, with the ids of those that passed the gate): (None when nothing is left to ask, how many
        trials were made, the ids that passed)."""
        trials = self.store.trials()
        pending = history.pending(trials)
        if within_budget:
            n = min(n, self.settings.max_trials - history.n_results(trials) - len(pending))
            if self.settings.max_instrument_hours is not None:  # no new trial once results and those in flight fill it
                committed = history.cost_hours(self.settings.problem, trials, (*history.RESULT_STATES, *history.IN_FLIGHT_STATES))
                n = n if committed < self.settings.max_instrument_hours - history.HOURS_TOLERANCE else 0
        if n <= 0:
            return None, 0, []
        observations = history.observations(self.settings.problem, trials)
        again = self._offer_again(trials, observations, n, origin)
        passed = [trial_id for trial_id in again if self._passes_gate(trial_id, self.store.trial(trial_id).conditions)]
        if len(again) == n:
            return None, n, passed
        if again:  # the planner sees the points offered again as pending
            trials = self.store.trials()
            pending = history.pending(trials)
        seed = planner_seed(self.settings.seed, len(trials))
        sources = history.pending_fidelities(self.settings.problem, trials)
        return PlanRequest(observations, pending, n - len(again), seed, origin, sources), len(again), passed

    def _store_proposals(self, proposals: Sequence[Proposal], origin: str | None) -> list[int]:
        """Each proposal stored as a trial and passed through the gate; the ids that passed."""
        passed = []
        for proposal in proposals:
            provenance = proposal.provenance
            trial_id = self.log.add_trial(
                proposal.conditions,
                proposer=provenance.planner or self.planner.name,
                origin=origin or ("initial" if provenance.initial else "planner"),
                provenance=provenance,
            )
            if self._passes_gate(trial_id, proposal.conditions):
                passed.append(trial_id)
        return passed

    def _offer_again(self, trials: list[TrialRecord], observations: list, n: int, origin: str | None) -> list[int]:
        """Up to `n` abandoned initial-design points stored as new trials (journaled), while the planner is
        still in its initial design (as it decides: fewer results than `n_initial`)."""
        if len(observations) >= self.settings.n_initial:
            return []
        refused = {e["trial_id"] for e in self.store.events(kinds=["safety_refusal"])}
        points = abandoned_initial_points(trials, is_initial=self._initial_design_trial, refused=refused)
        out = []
        for point in points[:n]:
            last, first = point.last, point.first
            why = f"initial-design point of trial {first.id}, abandoned ({last.detail or 'no result'})"
            provenance = Provenance(planner=first.proposer, design="initial", notes=(f"offered again: {why}",),
                                    fidelity=first.fidelity, extra={"offered_again_of": last.id})
            with self.store.batch():  # the trial and why it exists, together
                trial_id = self.log.add_trial(last.conditions, proposer=first.proposer,
                                              origin=origin or "initial", provenance=provenance)
                self.log.emit(InitialPointOffered(trial_id, last.id, f"offered again: {why}"))
            self._reoffered[trial_id] = why
            out.append(trial_id)
        return out

    def _initial_design_trial(self, trial: TrialRecord) -> bool:
        if trial.origin == "initial":
            return True
        record = self.store.proposal(trial.id)  # `ask` stores its trials as "manual": the proposal says
        return record is not None and record.provenance.initial

    def waiting(self) -> list[TrialRecord]:
        """Trials `ask` offers before new ones, oldest first: those handed out before with no result told,
        then those stored but never run (a retry queued after a fault or an operator abort)."""
        return self.handed_out() + self.store.trials(states=["proposed", "approved"])

    def handed_out(self) -> list[TrialRecord]:
        """Trials handed to a person with `ask` whose result has not been told, oldest first."""
        return [t for t in self.store.trials(states=["dispatched"]) if t.instrument == HANDED_OUT_TO]

    def _waiting(self, n: int) -> list[Offered]:
        out: list[Offered] = []
        for t in self.waiting():
            if len(out) >= n:
                break
            if t.state == "dispatched":
                out.append(Offered(t.id, HANDED_OUT_BEFORE))
            elif t.state == "approved" or self._passes_gate(t.id, t.conditions):
                self.hand_out(t.id)
                retry = f" of trial {t.retry_of}" if t.retry_of else ""
                out.append(Offered(t.id, f"stored earlier ({t.origin}{retry}) and never run"))
        return out

    def _ask_planner(self, request: PlanRequest) -> list[Proposal]:
        try:
            return list(self._planner_call(request))
        except Exception as exc:  # noqa: BLE001 - a planner bug must not end an overnight campaign; it is journaled
            return self._fall_back(request, exc)

    def _planner_call(self, request: PlanRequest) -> Sequence[Proposal]:
        """The planner's proposals for `request`: a pure computation (safe on the planning thread)."""
        problem, candidates = self.settings.problem, self.settings.candidates
        return self.planner.propose(problem, request.observations, request.pending, request.n, request.seed, candidates,
                                    request.pending_fidelities)

    def _fall_back(self, request: PlanRequest, exc: Exception) -> list[Proposal]:
        problem, candidates = self.settings.problem, self.settings.candidates
        why = f"planner raised {type(exc).__name__}: {exc}; used {self.fallback_planner.name}"
        self.log.emit(PlannerFailed(ErrorInfo.of(exc, with_traceback=True), self.fallback_planner.name))
        proposals = self.fallback_planner.propose(problem, request.observations, request.pending, request.n,
                                                  request.seed, candidates)
        return [Proposal(p.conditions, p.provenance.with_fallback(why)) for p in proposals]
