"""What a campaign report shows, read once from the store: trials, proposals, journal, derived series.

Everything here is plain numbers and records; `controller.report.figures` turns them into plots and
`controller.report.html` into the HTML page. A campaign file copied without its protocol's candidate table,
a campaign with no trials or a sobol-only one all load: what is missing becomes a note, never an error.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop.controller.engine import history
from closedloop.controller.protocol.model import Protocol, ProtocolError, parse_protocol_text
from closedloop.controller.store.reads import CampaignReads, ProposalRecord, TrialRecord
from closedloop.planners.space import ChoiceParameter, FixedParameter, Objective, Problem

# Journal entries a reader of the report must see, with the heading each gets.
NOTABLE_EVENTS = {
    "fault": "instrument fault",
    "safety_refusal": "safety refusal",
    "approval": "operator decision",
    "operator_step": "operator step",
    "planner_error": "planner error",
    "resume": "resumed",
    "recovered": "recovered from the instrument",
    "safe_state": "instrument made safe",
    "import": "earlier results imported (warm start)",
    "reoffer": "initial-design point offered again",
    "hold": "paused by an operator (no new trials)",
    "release": "resumed by an operator",
}


@dataclass
class ReportData:
    path: Path
    info: dict[str, Any]  # the campaign row
    protocol: Protocol
    problem: Problem
    trials: list[TrialRecord]
    proposals: dict[int, ProposalRecord | None]
    events: list[dict[str, Any]]
    candidates: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return self.problem.objectives

    @property
    def results(self) -> list[TrialRecord]:
        """Trials that produced data (measured or failed), in the order they were proposed."""
        return [t for t in self.trials if t.state in history.RESULT_STATES]

    @property
    def measured(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "measured"]

    @property
    def searched_parameters(self) -> list[str]:
        """Parameters the planner varies (fixed ones are the same on every trial)."""
        return [p.name for p in self.problem.space.parameters if not isinstance(p, FixedParameter)]

    def is_choice(self, name: str) -> bool:
        return isinstance(self.problem.space.parameter(name), ChoiceParameter)

    def unit_of_parameter(self, name: str) -> str:
        return str(getattr(self.protocol.space[name], "unit", "") or "")

    def unit_of_objective(self, name: str) -> str:
        return self.protocol.objective_units().get(name, "")

    def planner_time_s(self, trial_id: int) -> float:
        proposal = self.proposals.get(trial_id)
        return 0.0 if proposal is None else proposal.provenance.planning_s

    def acquisition_value(self, trial_id: int) -> float | None:
        proposal = self.proposals.get(trial_id)
        return None if proposal is None or proposal.acquisition_value is None else float(proposal.acquisition_value)

    def design(self, trial_id: int) -> str:
        """How the planner chose the point, e.g. "model (qLogNoisyExpectedImprovement)" or "initial (sobol)"."""
        proposal = self.proposals.get(trial_id)
        if proposal is None or not proposal.provenance.design:
            return ""
        design, acquisition = proposal.provenance.design, proposal.provenance.acquisition
        return f"{design} ({acquisition})" if acquisition else design

    @functools.cached_property
    def outside_space(self) -> dict[int, list[str]]:
        """Warm-start trials flagged outside the search space on import -> why (`controller.warm_start`)."""
        return {e["trial_id"]: list((e["data"] or {}).get("outside_space") or []) for e in self.events
                if e["kind"] == "warm_start" and (e["data"] or {}).get("outside_space")}

    def notable_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] in NOTABLE_EVENTS]


def load_report_data(store: CampaignReads) -> ReportData:
    """Read everything a report needs from an open campaign store (read-only)."""
    # The status checked against the writer lock: a killed run's file says "running" (store.activity).
    info = {**store.campaign(), "status": store.activity().status}
    protocol = parse_protocol_text(info["protocol_text"], info["protocol_path"])
    trials = store.trials()
    data = ReportData(
        path=Path(store.path),
        info=info,
        protocol=protocol,
        problem=protocol.to_problem(),
        trials=trials,
        proposals={t.id: store.proposal(t.id) for t in trials},
        events=store.events(),
    )
    if protocol.candidates is not None:
        try:
            data.candidates = protocol.candidates_frame()
        except ProtocolError as exc:
            # A campaign file travels without its protocol folder; the pool is only needed for the baseline.
            data.notes.append(f"candidate table not readable here ({exc}); no random-sampling baseline")
    return data


def timestamp(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- derived series ------------------------------------------------------------------------------


def _better(objective: Objective, a: float, b: float) -> bool:
    return a > b if objective.maximize else a < b


def best_so_far(data: ReportData, objective: Objective) -> list[float | None]:
    """Per result (measured or failed trial, in order): the best feasible value of `objective` so far."""
    best: float | None = None
    out: list[float | None] = []
    for t in data.results:
        v = t.values.get(objective.name)
        usable = t.state == "measured" and v is not None and math.isfinite(v) and _feasible(data.problem, t.values)
        if usable and v is not None and (best is None or _better(objective, v, best)):
            best = v
        out.append(best)
    return out


def _feasible(problem: Problem, values: dict[str, float]) -> bool:
    return history.feasible(problem, values)


def constraint_summary(data: ReportData) -> str | None:
    """Each outcome constraint with how many measured trials meet it, and how many meet them all; None
    for a campaign without outcome constraints."""
    constraints = data.problem.outcome_constraints
    if not constraints:
        return None
    measured = [t.values for t in data.measured]
    each = [f"{text} (met by {sum(history.constraint_holds(c, v) for v in measured)})"
            for text, c in zip(data.protocol.outcome_constraints, constraints, strict=True)]
    met = sum(_feasible(data.problem, v) for v in measured)
    return f"{'; '.join(each)}: {met} of {len(measured)} measured trials meet every one"


def feasibility_label(data: ReportData, trial: TrialRecord) -> str | None:
    """"yes"/"no" for a measured trial: does it meet every outcome constraint; None for other trials."""
    if trial.state != "measured":
        return None
    return "yes" if _feasible(data.problem, trial.values) else "no"


def instrument_hours(data: ReportData) -> list[float]:
    """Cumulative instrument time (hours) at the end of each result."""
    total = 0.0
    out = []
    for t in data.results:
        total += float(t.duration_s or 0.0)
        out.append(total / 3600.0)
    return out


def initial_design_end(data: ReportData) -> int:
    """The position (1-based) of the last result from the initial design; 0 when there is none.
    Retries of faulted initial trials sit among them, so this is not a count of initial trials."""
    positions = [i for i, t in enumerate(data.results, start=1) if t.origin == "initial"]
    return positions[-1] if positions else 0


def random_expected_best(values: np.ndarray, n: int, maximize: bool) -> list[float]:
    """Expected best of the first k = 1..n rows drawn at random without replacement from a pool.

    With the pool sorted from worst to best (v_1..v_N), the best of k draws is v_j with probability
    C(j-1, k-1) / C(N, k): exact, so no simulated random runs are needed.
    """
    v = np.sort(values[np.isfinite(values)])
    if not maximize:
        v = v[::-1]
    size = v.size
    if size == 0:
        return []
    j = np.arange(1, size + 1)
    out = []
    for k in range(1, min(n, size) + 1):
        # log C(j-1, k-1) - log C(N, k) with lgamma, stable for pools of thousands of rows.
        with np.errstate(invalid="ignore"):
            logp = np.array([
                _log_comb(jj - 1, k - 1) - _log_comb(size, k) if jj >= k else -np.inf for jj in j.tolist()
            ])
        out.append(float(np.sum(np.exp(logp) * v)))
    return out


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def random_baseline(data: ReportData, objective: Objective) -> list[float] | None:
    """The random-sampling expectation of best-so-far, when the pool's values are known; else None."""
    if data.candidates is None or objective.name not in data.candidates.columns:
        return None
    values = pd.to_numeric(data.candidates[objective.name], errors="coerce").to_numpy(dtype=float)
    return random_expected_best(values, max(len(data.results), 1), objective.maximize) or None


def objective_matrix(data: ReportData) -> tuple[list[TrialRecord], np.ndarray]:
    """Measured trials with every objective, and their objective values (rows: trials)."""
    names = [o.name for o in data.objectives]
    rows = [t for t in data.measured if all(n in t.values and math.isfinite(t.values[n]) for n in names)]
    matrix = np.array([[t.values[n] for n in names] for t in rows], dtype=float).reshape(len(rows), len(names))
    return rows, matrix


def pareto_mask(data: ReportData, matrix: np.ndarray) -> np.ndarray:
    """Which rows of `matrix` (feasible or not) no other row dominates, larger-is-better per direction."""
    signed = matrix * np.array([1.0 if o.maximize else -1.0 for o in data.objectives])
    mask = np.ones(len(signed), dtype=bool)
    for i, row in enumerate(signed):
        dominated = np.all(signed >= row, axis=1) & np.any(signed > row, axis=1)
        mask[i] = not dominated.any()
    return mask


def hypervolume_trace(data: ReportData) -> tuple[list[int], list[float], str] | None:
    """Hypervolume of the observed front after each result (in model units: log10 where declared,
    signed so larger is better), with the reference point used; None with fewer than 2 objectives."""
    if len(data.objectives) < 2:
        return None
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume, infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    def model_units(values: dict[str, float]) -> list[float] | None:
        out = []
        for o in data.objectives:
            v = values.get(o.name)
            if v is None or not math.isfinite(v) or (o.log and v <= 0):
                return None
            out.append((math.log10(v) if o.log else v) * (1.0 if o.maximize else -1.0))
        return out

    points = [model_units(t.values) if t.state == "measured" and _feasible(data.problem, t.values) else None
              for t in data.results]
    known = torch.tensor([p for p in points if p is not None], dtype=torch.float64)
    if known.shape[0] == 0:
        return None
    if data.problem.reference_point is not None:
        ref = torch.tensor(model_units(data.problem.reference_point) or [], dtype=torch.float64)
        where = "the protocol's reference point"
    else:
        ref = infer_reference_point(known)
        where = "a reference point inferred from all observed values (BoTorch's infer_reference_point)"
    hv = Hypervolume(ref)
    seen: list[list[float]] = []
    xs, ys = [], []
    for i, p in enumerate(points, start=1):
        if p is not None:
            seen.append(p)
        xs.append(i)
        front = torch.tensor(seen, dtype=torch.float64).reshape(len(seen), len(data.objectives))
        front = front[(front > ref).all(dim=-1)]
        front = front[is_non_dominated(front)]  # Hypervolume.compute expects a Pareto set
        ys.append(float(hv.compute(front)) if front.shape[0] else 0.0)
    return xs, ys, where
