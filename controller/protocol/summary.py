"""What `closedloop validate` reports about a valid protocol, as records (`--json` prints them as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ParameterSummary:
    name: str
    type: Literal["float", "int", "choice", "fixed"]
    unit: str = ""
    low: float | None = None
    high: float | None = None
    step: int | None = None  # int parameters
    log: bool = False  # float parameters searched in log10
    values: tuple[str, ...] | None = None  # choice parameters
    value: float | str | None = None  # fixed parameters


@dataclass(frozen=True)
class ConstraintSummary:
    text: str
    kind: str  # "<=" or "=="
    rhs: float
    lhs_range: tuple[float, float]  # of the left side over the parameter bounds
    redundant: bool  # always holds inside the bounds


@dataclass(frozen=True)
class ObjectiveSummary:
    name: str
    direction: str
    unit: str
    log: bool
    target: float | None


@dataclass(frozen=True)
class InstrumentSummary:
    driver: str
    connection: str | None
    measures: dict[str, str]
    by_hand: bool = False  # a person runs each trial: no connection, no envelope (the space bounds it)


@dataclass(frozen=True)
class StepSummary:
    """One step of a workflow: where it runs, what it receives and measures, how it is scheduled."""

    name: str
    driver: str  # or "transfer (robot)", "transfer (operator)"
    connection: str | None
    parameters: list[str]
    measures: dict[str, str]
    stations: int
    max_wait_s: float | None
    repeatable: bool
    duration_s: float


@dataclass(frozen=True)
class FidelitySummary:
    """One source of the objective: its route through the workflow, what it measures, its declared cost."""

    name: str
    steps: list[str]
    measures: str
    cost_s: float
    target: bool


@dataclass(frozen=True)
class EnvelopeMargin:
    """How far a parameter's range sits inside the instrument's limit, in the instrument's unit."""

    parameter: str
    unit: str
    low: float
    high: float
    min: float | None
    max: float | None
    low_margin: float | None
    high_margin: float | None


@dataclass(frozen=True)
class PlannerSummary:
    initial: int
    method: str
    acquisition: str
    batch_size: int
    seed: int


@dataclass(frozen=True)
class BudgetSummary:
    trials: int
    wall_time_s: float | None
    instrument_time_s: float | None = None


@dataclass(frozen=True)
class CandidatesSummary:
    path: str
    rows: int


@dataclass(frozen=True)
class ValidationSummary:
    name: str
    description: str
    file: str | None
    sha256: str
    parameters: list[ParameterSummary]
    constraints: list[ConstraintSummary]
    feasible: bool
    feasible_example: dict[str, float] | None  # a point where every constraint holds
    objectives: list[ObjectiveSummary]
    outcome_constraints: list[str]
    instrument: InstrumentSummary
    envelope_margins: list[EnvelopeMargin]
    planner: PlannerSummary
    budget: BudgetSummary
    approval: str
    candidates: CandidatesSummary | None
    notes: list[str] = field(default_factory=list)
    steps: list[StepSummary] = field(default_factory=list)  # a workflow's steps, in order (empty: one instrument)
    fidelities: list[FidelitySummary] = field(default_factory=list)  # sources of the objective (empty: one)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a parameter lists only the fields of its type."""
        out = asdict(self)
        out["parameters"] = [{k: v for k, v in p.items() if v is not None} for p in out["parameters"]]
        return out
