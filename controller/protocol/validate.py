"""Static checks of a loaded protocol against its instrument, its budget and its candidate table.

Nothing moves: this proves, before a campaign starts, that the space sits inside the instrument's
declared safety envelope (after unit conversion), that the linear constraints leave a feasible region
(a linear program, not sampling), that the instrument measures every objective, that the budget is
larger than the initial design, and that a candidate table matches the space. Each problem is located
in the protocol file; the summary is what `closedloop validate` prints for a valid protocol.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.controller.protocol.instruments import (
    InstrumentDescriptionError,
    described_by_protocol,
    emulator_problem,
)
from closedloop.controller.protocol.limits import (
    missing_limit_problems,
    setpoint_command_problems,
    unchecked_warning,
)
from closedloop.controller.protocol.model import Protocol
from closedloop.controller.protocol.sections import ChoiceSpec, FixedSpec, FloatSpec, IntSpec
from closedloop.controller.protocol.summary import (
    BudgetSummary,
    CandidatesSummary,
    ConstraintSummary,
    EnvelopeMargin,
    FidelitySummary,
    InstrumentSummary,
    ObjectiveSummary,
    ParameterSummary,
    PlannerSummary,
    StepSummary,
    ValidationSummary,
)
from closedloop.controller.protocol.workflow import Step
from closedloop.controller.protocol.yaml_source import FieldPath, ProtocolError, ProtocolProblem
from closedloop.drivers.base import DriverDescription, Limit
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.planners.space import LinearConstraint
from closedloop.units import UnitError, compatible, convert, parse_quantity_to

if TYPE_CHECKING:
    import pandas as pd

_TOLERANCE = 1e-9  # relative: unit conversion round-off must not turn 250 degC into "above 250"


@dataclass
class ValidationReport:
    problems: list[ProtocolProblem]
    summary: ValidationSummary

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class _Findings:
    """What the checks accumulate: problems, and the facts the summary reports."""

    protocol: Protocol
    problems: list[ProtocolProblem] = field(default_factory=list)
    margins: list[EnvelopeMargin] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, path: FieldPath, message: str) -> None:
        self.problems.append(self.protocol.problem(path, message))


def validate_protocol(protocol: Protocol) -> ValidationReport:
    found = _Findings(protocol)
    description = _description(found)
    if description is not None:
        if protocol.is_line:
            _check_steps(found)
        else:
            _check_envelope(found, description)
        _check_objectives(found, description)
    n_initial, trials = protocol.planner.initial.n, protocol.budget.trials
    if n_initial >= trials:
        # A note, not a problem: a campaign of space-filling points only (a screen) is a campaign, and
        # `run` refuses whatever validate refuses.
        found.notes.append(f"the budget ({trials} trials) ends within the initial design (planner.initial.n = {n_initial}): "
                           "no trial will be chosen by the model; lower planner.initial.n to let the planner learn")
    feasibility = _check_feasibility(found)
    candidate_rows = _check_candidates(found)
    problems = sorted(dict.fromkeys(found.problems), key=lambda p: (p.line, p.col))
    return ValidationReport(problems, _summary(found, description, feasibility, candidate_rows))


def require_valid(protocol: Protocol) -> ValidationReport:
    """`validate_protocol`, raising `ProtocolError` with every problem it finds: `run` and `resume` call it
    before a campaign file is created or continued, so they refuse exactly what `validate` refuses."""
    report = validate_protocol(protocol)
    if report.problems:
        raise ProtocolError(report.problems)
    return report


def _description(found: _Findings) -> DriverDescription | None:
    try:
        return found.protocol.description_of_instrument()
    except ProtocolError as e:
        found.problems += e.problems
    except InstrumentDescriptionError as e:
        found.add(e.path, str(e))
    return None


# --- the space against the envelope ---


def _check_envelope(found: _Findings, description: DriverDescription) -> None:
    protocol, limits = found.protocol, description.envelope.limits
    instrument = f"the {description.name} instrument"
    section = protocol.the_instrument()
    serial = section if isinstance(section, SerialInstrumentConfig) else None
    for name, spec in protocol.space.items():
        if serial is not None and name not in serial.set:
            found.add(("space", name), f"{instrument} has no command for {name!r}: add instrument.set.{name}")
        elif name not in limits:
            hint = get_close_matches(name, list(limits), n=1)
            guess = f"did you mean {hint[0]!r}? " if hint else ""
            found.add(("space", name), f"{instrument} does not accept {name!r}; {guess}it accepts: {', '.join(limits)}")
        else:
            _check_parameter(found, name, spec, limits[name], instrument)
    if serial is not None:
        _check_serial(found, serial)
    found.problems += missing_limit_problems(protocol, description)
    found.problems += setpoint_command_problems(protocol, description)
    warning = unchecked_warning(protocol)
    if warning is not None:
        found.notes.append(warning)
    _check_options(found, limits, instrument)
    problem = emulator_problem(section.driver, section.connection, section)
    if problem is not None:
        found.add(("instrument", "connection"), problem)
    if serial is None and not described_by_protocol(section):
        given = set(protocol.space) | set(section.options) | set(description.optional_settings)
        for name in limits:
            if name not in given:
                found.add(("space",), f"{instrument} needs a value for {name!r}: add it to space (a parameter or type: fixed)")


def _check_steps(found: _Findings) -> None:
    """A line: each step's instrument checked as a protocol of one instrument over the step's parameters
    (its envelope, options, connection), problems located in the step."""
    for step in found.protocol.steps():
        if step.instrument is None:
            continue
        view = _Findings(found.protocol.step_view(step))
        description = _description(view)
        if description is not None:  # named after the step: "the anneal step's serial instrument"
            _check_envelope(view, dataclasses.replace(description, name=f"{step.name} step's {description.name}"))
        found.problems += view.problems
        found.margins += view.margins
        found.notes += [f"step {step.name}: {note}" for note in view.notes]


def _check_serial(found: _Findings, section: SerialInstrumentConfig) -> None:
    """What only a serial section can get wrong: commands for parameters the space lacks."""
    for name in section.set:
        if name not in found.protocol.space:
            found.add(("instrument", "set", name), f"{name!r} is not a parameter of the space")


def _check_parameter(found: _Findings, name: str, spec: Any, limit: Limit, instrument: str) -> None:
    at: FieldPath = ("space", name)
    if isinstance(spec, ChoiceSpec) or (isinstance(spec, FixedSpec) and isinstance(spec.value, str)):
        labels = spec.values if isinstance(spec, ChoiceSpec) else [spec.value]
        if limit.allowed is None:
            found.add(at, f"{instrument} expects a number for {name!r}, not a label")
        for i, label in enumerate(labels):
            if limit.allowed is not None and label not in limit.allowed:
                where = (*at, "values", i) if isinstance(spec, ChoiceSpec) else (*at, "value")
                found.add(where, f"{label!r} is not accepted by {instrument}; allowed: {', '.join(limit.allowed)}")
        return
    if limit.allowed is not None:
        found.add((*at, "type"), f"{instrument} expects one of {', '.join(limit.allowed)}: use type: choice")
        return
    unit = spec.unit
    if not _units_agree(unit, limit.unit):
        found.add((*at, "unit"), f"unit {unit or '(none)'!r} is not compatible with {instrument}'s unit {limit.unit or '(none)'!r} for {name}")
        return
    ends = {"value": float(spec.value)} if isinstance(spec, FixedSpec) else {"low": spec.low, "high": spec.high}
    inside = {key: convert(value, unit, limit.unit) for key, value in ends.items()}
    for key, value in ends.items():
        label = f"{key} {_show(value, unit)}" + (f" (= {_show(inside[key], limit.unit)})" if unit != limit.unit else "")
        _check_limit(found, (*at, key), label, inside[key], limit, instrument)
    low, high = min(inside.values()), max(inside.values())
    if limit.min is not None or limit.max is not None:
        found.margins.append(EnvelopeMargin(
            name, limit.unit, low, high, limit.min, limit.max,
            low_margin=None if limit.min is None else low - limit.min,
            high_margin=None if limit.max is None else limit.max - high,
        ))
    if limit.max_step is not None and high - low > limit.max_step:
        found.notes.append(f"{name}: the range spans {_show(high - low, limit.unit)} but setpoints may change by at most "
                           f"{_show(limit.max_step, limit.unit)} per trial; larger jumps are refused at dispatch")
    if limit.max_rate is not None and high > low:
        found.notes.append(f"{name}: ramps at most {limit.max_rate:g} {limit.unit}/min; crossing the whole range takes "
                           f"{(high - low) / limit.max_rate:.0f} min")


def _check_limit(found: _Findings, at: FieldPath, shown: str, value: float, limit: Limit, instrument: str) -> None:
    """Report `value` (in the limit's unit) outside [min, max]; `shown` is how the protocol wrote it."""
    slack = _TOLERANCE * max(1.0, abs(value))
    if limit.min is not None and value < limit.min - slack:
        found.add(at, f"{shown} is below {instrument}'s minimum {_show(limit.min, limit.unit)}")
    if limit.max is not None and value > limit.max + slack:
        found.add(at, f"{shown} is above {instrument}'s maximum {_show(limit.max, limit.unit)}")


def _check_options(found: _Findings, limits: Mapping[str, Limit], instrument: str) -> None:
    """Options naming an envelope setting are fixed settings: they must sit inside the envelope too."""
    for name, value in found.protocol.the_instrument().options.items():
        at: FieldPath = ("instrument", "options", name)
        limit = limits.get(name)
        if limit is None:
            continue
        if name in found.protocol.space:
            found.add(at, f"{name!r} is set both here and in space; keep one")
        elif limit.allowed is not None:
            if str(value) not in limit.allowed:
                found.add(at, f"{value!r} is not accepted by {instrument}; allowed: {', '.join(limit.allowed)}")
        else:
            try:
                number = parse_quantity_to(value, limit.unit)
            except UnitError as e:
                found.add(at, str(e))
                continue
            converted = f" (= {_show(number, limit.unit)})" if isinstance(value, str) and _show(number, limit.unit) != value.strip() else ""
            _check_limit(found, at, f"{name} {value}{converted}", number, limit, instrument)


def _check_objectives(found: _Findings, description: DriverDescription) -> None:
    measures = description.measures
    for name in measures:
        if name in found.protocol.space and description.by_hand:
            found.add(("instrument", "measures", name), f"{name!r} is both a parameter and a measured value; rename one")
    for name, spec in found.protocol.objectives.items():
        if name not in measures:
            if found.protocol.instrument is not None and described_by_protocol(found.protocol.instrument):
                found.add(("objectives", name), f"the candidate table has no column {name!r} to reveal")
                continue
            hint = get_close_matches(name, list(measures), n=1)
            guess = f"did you mean {hint[0]!r}? " if hint else ""
            if description.by_hand:
                unit = f" {spec.unit}" if spec.unit else " UNIT"
                found.add(("objectives", name), f"{name!r} is not in instrument.measures; {guess}add {name}:{unit} there "
                          f"(the values the operator measures: {', '.join(measures)})")
                continue
            found.add(("objectives", name), f"the {description.name} instrument does not measure {name!r}; {guess}it measures: {', '.join(measures)}")
        elif not _units_agree(spec.unit, measures[name]):
            found.add(("objectives", name, "unit"), f"unit {spec.unit or '(none)'!r} is not compatible with the measured unit {measures[name] or '(none)'!r}")


# --- constraints: a linear program over the bounds ---


@dataclass(frozen=True)
class _Feasibility:
    feasible: bool
    constraints: list[ConstraintSummary]
    example: dict[str, float] | None


def _check_feasibility(found: _Findings) -> _Feasibility:
    protocol = found.protocol
    box = {n: (s.low, s.high) for n, s in protocol.space.items() if isinstance(s, FloatSpec | IntSpec)}
    constraints = protocol.linear_constraints()
    rows, satisfiable = [], []
    for i, c in enumerate(constraints):
        lo = sum(min(k * box[n][0], k * box[n][1]) for n, k in c.coefficients.items())
        hi = sum(max(k * box[n][0], k * box[n][1]) for n, k in c.coefficients.items())
        rows.append(ConstraintSummary(c.text, c.kind, c.rhs, (lo, hi), redundant=c.kind == "<=" and hi <= c.rhs))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            found.add(("constraints", i), "over the parameter bounds the left side overflows to infinity; scale the "
                      "constraint down, e.g. divide both sides by the same power of ten")
        elif (c.kind == "<=" and lo > c.rhs) or (c.kind == "==" and not lo <= c.rhs <= hi):
            found.add(("constraints", i), f"cannot hold inside the parameter bounds: the left side ranges over "
                      f"[{lo:g}, {hi:g}] there, the right side is {c.rhs:g}")
        else:
            satisfiable.append(c)
    if not constraints:
        return _Feasibility(True, rows, None)
    # Each remaining constraint holds somewhere in the box; a linear program tells whether all do at once.
    names = list(box)
    a_ub, b_ub = _stack(satisfiable, "<=", names)
    a_eq, b_eq = _stack(satisfiable, "==", names)
    from scipy.optimize import linprog  # a second or so to import: only protocols with constraints pay it

    result = linprog(np.zeros(len(names)), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=list(box.values()), method="highs")
    if result.status != 0:
        found.add(("constraints",), "the constraints cannot all hold at once inside the parameter bounds "
                  "(the linear program has no solution); relax a constraint or widen the bounds")
    feasible = result.status == 0 and len(satisfiable) == len(constraints)
    example = dict(zip(names, map(float, result.x), strict=True)) if feasible and result.x is not None else None
    return _Feasibility(feasible, rows, example)


def _stack(constraints: Sequence[LinearConstraint], kind: str, names: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The constraints of one kind as linprog's (A, b), or (None, None) when there are none."""
    chosen = [c for c in constraints if c.kind == kind]
    if not chosen:
        return None, None
    return np.array([[c.coefficients.get(n, 0.0) for n in names] for c in chosen]), np.array([c.rhs for c in chosen])


# --- pool mode ---


def _check_candidates(found: _Findings) -> int | None:
    protocol = found.protocol
    if protocol.candidates is None:
        return None
    try:
        table = protocol.candidates_frame()
    except ProtocolError as e:
        found.problems += e.problems
        return None
    assert table is not None
    at: FieldPath = ("candidates", "path")
    if table.empty:
        found.add(at, "the candidate table has no rows")
        return 0
    for name, spec in protocol.space.items():
        if name not in table.columns:
            if not isinstance(spec, FixedSpec):
                # The headers are the file's content: only one close to the name is offered, never the list.
                close = get_close_matches(name, [str(c) for c in table.columns], n=1, cutoff=0.75)
                guess = f"the header {close[0]!r} may be it: " if close else ""
                found.add(at, f"the candidate table has no column for parameter {name!r} ({len(table.columns)} columns); "
                          f"{guess}add it or map a header in candidates.columns")
            continue
        _check_column(found, name, spec, table[name])
    return len(table)


def _check_column(found: _Findings, name: str, spec: Any, column: pd.Series) -> None:
    """Every row's value of `name` must be a legal value of the parameter."""
    import pandas as pd  # the table was read with it already
    if isinstance(spec, ChoiceSpec):
        bad = ~column.astype(str).isin(spec.values)
        allowed = f"one of the listed values of space.{name}"
    elif isinstance(spec, FixedSpec):
        bad = column.astype(str) != str(spec.value) if isinstance(spec.value, str) else pd.to_numeric(column, errors="coerce") != spec.value
        allowed = f"the fixed value {spec.value!r}"
    else:
        numbers = pd.to_numeric(column, errors="coerce")
        bad = numbers.isna() | (numbers < spec.low) | (numbers > spec.high)
        if isinstance(spec, IntSpec):
            bad |= ((numbers - spec.low) % spec.step).fillna(1) != 0
        allowed = f"inside space.{name} [{spec.low:g}, {spec.high:g}]" + (f" on the step {spec.step}" if isinstance(spec, IntSpec) else "")
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        found.add(("candidates", "path"), f"{int(bad.sum())} candidate rows have {name} not {allowed} "
                  f"(first: data row {first + 1}); fix the rows or the space")


# --- summary ---


def _summary(
    found: _Findings, description: DriverDescription | None, feasibility: _Feasibility, rows: int | None
) -> ValidationSummary:
    p = found.protocol
    return ValidationSummary(
        name=p.name,
        description=p.description,
        file=str(p.path) if p.path else None,
        sha256=p.sha256,
        parameters=[_parameter(name, spec) for name, spec in p.space.items()],
        constraints=feasibility.constraints,
        feasible=feasibility.feasible,
        feasible_example=feasibility.example,
        objectives=[ObjectiveSummary(n, s.direction, s.unit, s.log, s.target) for n, s in p.objectives.items()],
        outcome_constraints=list(p.outcome_constraints),
        instrument=InstrumentSummary(p.instrument.driver if p.instrument else "workflow",
                                     p.instrument.connection if p.instrument else None,
                                     dict(description.measures) if description else {},
                                     by_hand=description is not None and description.by_hand),
        steps=[_step(p, step) for step in p.steps()] if p.is_line else [],
        envelope_margins=found.margins,
        planner=PlannerSummary(p.planner.initial.n, p.planner.initial.method, p.planner.acquisition,
                               p.planner.batch_size, p.planner.seed),
        budget=BudgetSummary(p.budget.trials, p.budget.wall_time, p.budget.instrument_time),
        fidelities=[FidelitySummary(name, list(f.steps), f.measures, f.cost, f.target)
                    for name, f in (p.fidelities or {}).items()],
        approval=p.approval.mode,
        candidates=None if rows is None else CandidatesSummary(str(p.candidates_path), rows),
        notes=found.notes,
    )


def _step(protocol: Protocol, step: Step) -> StepSummary:
    try:
        measures = dict(protocol.step_description(step).measures)
    except (ProtocolError, InstrumentDescriptionError):
        measures = {}  # reported among the problems
    return StepSummary(step.name, step.instrument.driver if step.instrument else f"transfer ({step.transfer})",
                       step.instrument.connection if step.instrument else None, list(step.parameters), measures,
                       step.stations, step.max_wait_s, step.repeatable, step.duration_s)


def _parameter(name: str, spec: Any) -> ParameterSummary:
    if isinstance(spec, ChoiceSpec):
        return ParameterSummary(name, "choice", values=tuple(spec.values))
    if isinstance(spec, FixedSpec):
        return ParameterSummary(name, "fixed", spec.unit, value=spec.value)
    if isinstance(spec, IntSpec):
        return ParameterSummary(name, "int", spec.unit, spec.low, spec.high, step=spec.step)
    return ParameterSummary(name, "float", spec.unit, spec.low, spec.high, log=spec.log)


def _units_agree(a: str, b: str) -> bool:
    try:
        return compatible(a, b)
    except UnitError:
        return False


def _show(value: float, unit: str) -> str:
    return f"{value:g} {unit}".rstrip()
