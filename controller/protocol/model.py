"""A protocol file: the whole definition of a campaign, loaded from YAML into a validated model.

    >>> protocol = load_protocol("protocols/mbe_srruo3.yaml")
    >>> protocol.to_problem().space.names        # what the planner sees
    ['ru_cell_temp', 'substrate_temp', 'ozone_flow', 'sr_cell_temp', 'growth_time']
    >>> protocol.description_of_instrument().envelope.limits["substrate_temp"].max   # degC
    900.0

Loading collects every problem it can find in one pass (schema errors from pydantic, then checks that
span sections: constraints, outcome constraints, trusted region) and raises `ProtocolError`, each
problem located at FILE:LINE:COL of the key or value at fault. Checks against the instrument and the
candidate table live in `controller.protocol.validate`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.representer import RepresenterError

from closedloop.controller.protocol import instruments
from closedloop.controller.protocol.candidates import CandidateFileError, read_candidate_table
from closedloop.controller.protocol.catalog import SIM
from closedloop.controller.protocol.expressions import (
    ExpressionError,
    parse_linear_constraint,
    parse_outcome_constraint,
)
from closedloop.controller.protocol.fidelities import (
    FidelitySection,
    fidelity_problems,
    fidelity_records,
    routes,
)
from closedloop.controller.protocol.sections import (
    ApprovalSection,
    BudgetSection,
    CandidatesSpec,
    ChoiceSpec,
    FailuresSection,
    FixedSpec,
    InstrumentSection,
    ObjectiveSpec,
    ParameterSpec,
    PlannerSection,
    Section,
    StopSection,
    Text,
    at_most_max_parameters,
    is_identifier,
)
from closedloop.controller.protocol.workflow import ScheduleSection, Step, StepSection, steps_of
from closedloop.controller.protocol.yaml_source import (
    MAX_BYTES,
    FieldPath,
    FieldSourceMap,
    MovedSourceMap,
    ProtocolError,
    ProtocolProblem,
    SourceMap,
    load_yaml,
    problems_from_validation_error,
    size_problem,
)
from closedloop.drivers.base import DriverDescription, SafetyEnvelope
from closedloop.planners.options import PLANNER_OPTIONS
from closedloop.planners.space import LinearConstraint, Objective, OutcomeConstraint, Problem, SearchSpace
from closedloop.records import Conditions, Value
from closedloop.units import UnitError, parse_quantity_to

if TYPE_CHECKING:
    import pandas as pd

MAX_STEPS = 16  # steps of a line; more is a mistake in the file, not a lab

__all__ = ["Protocol", "ProtocolError", "ProtocolProblem", "load_protocol", "parse_protocol_text", "protocol_from_dict"]


class Protocol(Section):
    name: Text
    description: str = ""
    version: Text = "1"
    space: Annotated[dict[str, ParameterSpec], BeforeValidator(at_most_max_parameters)] = Field(min_length=1)
    constraints: list[str] = Field(default_factory=list)  # linear, e.g. "anneal_temp + 2 * anneal_time <= 220"
    objectives: dict[str, ObjectiveSpec] = Field(min_length=1)
    outcome_constraints: list[str] = Field(default_factory=list)  # e.g. "tau_half >= 100 ns"
    reference_point: dict[str, float] | None = None  # multi-objective, in each objective's unit
    candidates: CandidatesSpec | None = None
    instrument: InstrumentSection | None = None  # one instrument; or a line of them in `workflow`
    workflow: dict[str, StepSection] | None = Field(None, min_length=1, max_length=MAX_STEPS)
    schedule: ScheduleSection = ScheduleSection()
    fidelities: dict[str, FidelitySection] | None = None  # sources of the objective and their costs
    planner: PlannerSection = PlannerSection()
    budget: BudgetSection
    stop: StopSection = StopSection()
    approval: ApprovalSection = ApprovalSection()
    failures: FailuresSection = FailuresSection()

    _path: Path | None = PrivateAttr(None)
    _text: str = PrivateAttr("")
    _source: SourceMap | None = PrivateAttr(None)
    _description: DriverDescription | None = PrivateAttr(None)

    # --- where it came from ---

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def text(self) -> str:
        return self._text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._text.encode("utf-8")).hexdigest()

    def problem(self, path: FieldPath, message: str) -> ProtocolProblem:
        """A problem located at `path` (e.g. ("space", "anneal_temp", "high")) in this protocol's file."""
        source = self._source or SourceMap(str(self._path or "<protocol>"), {})
        return source.problem(path, message)

    # --- what the planner and the engine use ---

    @property
    def wall_time_s(self) -> float | None:
        return self.budget.wall_time

    @property
    def approval_mode(self) -> str:
        return self.approval.mode

    def objective_units(self) -> dict[str, str]:
        return {name: spec.unit for name, spec in self.objectives.items()}

    def parameter_units(self) -> dict[str, str]:
        """Each parameter's unit, where it has one (choices and plain numbers have none)."""
        return {name: unit for name, spec in self.space.items() if (unit := getattr(spec, "unit", ""))}

    def linear_constraints(self) -> tuple[LinearConstraint, ...]:
        return tuple(self.parse_constraint(text) for text in self.constraints)

    def parse_constraint(self, text: str) -> LinearConstraint:
        """A linear constraint over this space: fixed numeric parameters are substituted by their value."""
        variables = [n for n, s in self.space.items() if not isinstance(s, ChoiceSpec | FixedSpec)]
        constants = {n: s.value for n, s in self.space.items() if isinstance(s, FixedSpec) and not isinstance(s.value, str)}
        labels = [n for n in self.space if n not in variables and n not in constants]
        return parse_linear_constraint(text, variables, constants, labels)

    def outcome_constraint_list(self) -> tuple[OutcomeConstraint, ...]:
        units = self.outcome_units()
        return tuple(parse_outcome_constraint(text, units) for text in self.outcome_constraints)

    def outcome_units(self) -> dict[str, str]:
        """What an outcome constraint may name -> the unit its bound is converted to: each objective in its
        declared unit, and every other quantity the instrument measures in the unit the instrument reports
        it in (the unit its values are stored in), e.g. a film thickness measured but not optimized."""
        units = self.objective_units()
        if not self.outcome_constraints:
            return units  # nothing to look up: a lookup pool's table is not read for it
        try:
            measures = dict(self.description_of_instrument().measures)
        except (ProtocolError, instruments.InstrumentDescriptionError):
            # A lookup pool whose table cannot be read (validate says so): it measures its objectives only.
            measures = {}
        return measures | units

    def to_problem(self) -> Problem:
        parameters = tuple(spec.to_parameter(name) for name, spec in self.space.items())
        objectives = tuple(
            Objective(name, spec.direction == "maximize", spec.log, spec.target) for name, spec in self.objectives.items()
        )
        return Problem(
            SearchSpace(parameters, self.linear_constraints()),
            objectives,
            self.outcome_constraint_list(),
            self.reference_point,
            fidelity_records(self.fidelities or {}),
        )

    def routes(self) -> dict[str, tuple[int, ...]]:
        """Each fidelity's steps (indices into `steps()`); empty without fidelities."""
        return routes(self.fidelities, self.steps()) if self.fidelities else {}

    def trusted_region_bounds(self) -> dict[str, tuple[float, float]]:
        """Approval's trusted region as (low, high) per parameter, in the parameter's unit."""
        return {
            name: (self._in_parameter_unit(name, r.low), self._in_parameter_unit(name, r.high))
            for name, r in self.approval.trusted_region.items()
        }

    def _in_parameter_unit(self, name: str, value: float | str) -> float:
        return parse_quantity_to(value, getattr(self.space[name], "unit", ""))

    # --- the candidate table (pool mode) ---

    @property
    def candidates_path(self) -> Path | None:
        if self.candidates is None:
            return None
        return self.beside_file(self.candidates.path)

    def beside_file(self, written: str) -> Path:
        """A path the protocol names (a candidate table, a simulation file): relative to the protocol's
        folder, or to the working folder for a protocol that has no file."""
        path = Path(written).expanduser()
        base = self._path.parent if self._path is not None else Path.cwd()
        return path if path.is_absolute() else base / path

    def candidates_frame(self) -> pd.DataFrame | None:
        """The candidate table with headers renamed by `candidates.columns`, so parameter (and objective)
        columns carry the protocol's names; other columns are kept. None outside pool mode.

        Raises `ProtocolError` located at candidates.path when the file is missing or not a CSV table, and
        at candidates.columns when a mapped header is not in it.
        """
        path = self.candidates_path
        if path is None:
            return None
        try:
            table = read_candidate_table(path)
        except CandidateFileError as e:
            raise self._error(("candidates", "path"), str(e)) from None
        columns = self.candidates.columns if self.candidates is not None else {}
        missing = {name: header for name, header in columns.items() if header not in table.columns}
        if missing:
            raise ProtocolError([
                self.problem(("candidates", "columns", name), f"the candidate table has no column {header!r}")
                for name, header in missing.items()
            ])
        return table.rename(columns={header: name for name, header in columns.items()})

    def _error(self, path: FieldPath, message: str) -> ProtocolError:
        return ProtocolError([self.problem(path, message)])

    # --- the instrument ---

    def steps(self) -> list[Step]:
        """The steps a sample passes through: the `workflow`, or the one `instrument` receiving every
        parameter (its stations from `instrument.options.stations`), named after its driver."""
        if self.workflow is not None:
            return steps_of(self.workflow)
        section = self.the_instrument()
        stations = instruments.station_options(section).stations
        return [Step(section.driver.removeprefix(SIM), 0, section, tuple(self.space), stations)]

    def step_view(self, step: Step, station: int | None = None) -> Protocol:
        """The protocol as one step sees it: that step's instrument as `instrument`, the space cut to the
        step's parameters, problems located under `workflow.STEP.instrument`. Every check and builder for
        one instrument (validate's envelope checks, stations, emulators) runs on it unchanged."""
        if self.workflow is None:
            return self
        instrument = step.instrument
        if station is not None and step.connections and instrument is not None:  # that station's own port
            instrument = instrument.model_copy(update={"connection": step.connections[station]})
        view = self.model_copy(update={
            "instrument": instrument,
            "workflow": None,
            "space": {name: spec for name, spec in self.space.items() if name in step.parameters},
        })
        view._path, view._text, view._description = self._path, self._text, None
        if self._source is not None:
            view._source = MovedSourceMap(self._source, "instrument", ("workflow", step.name))
        return view

    @property
    def is_line(self) -> bool:
        """A workflow of steps (even of one): samples move from step to step and each step is journaled."""
        return self.workflow is not None

    def needs_operator(self) -> bool:
        """A person takes part in every trial: an instrument run by hand, or a transfer the operator makes."""
        return any(step.transfer == "operator" or (step.instrument is not None and instruments.run_by_hand(step.instrument))
                   for step in self.steps())

    def the_instrument(self) -> InstrumentSection:
        """The instrument of a one-instrument protocol. A line has several: callers that need one ask
        `steps()` instead; this names the problem rather than returning None."""
        if self.instrument is None:
            raise instruments.InstrumentDescriptionError(("workflow",), "this protocol is a workflow of steps, each "
                                                         "with its own instrument")
        return self.instrument

    def step_description(self, step: Step) -> DriverDescription:
        """What one step's instrument accepts (its parameters) and measures; a transfer accepts and measures nothing."""
        if step.instrument is None:
            return DriverDescription(name=step.transfer or "transfer", envelope=SafetyEnvelope({}), measures={})
        space = {name: self.space[name] for name in step.parameters if name in self.space}
        return instruments.describe_instrument(step.instrument, space, self.objectives, self.candidates_frame)

    def description_of_instrument(self) -> DriverDescription:
        """What the instrument accepts and measures (computed once; a lookup pool reads its table). For a
        line, every step's together: each parameter goes to one step, so their envelopes do not overlap."""
        if self._description is None:
            if self.workflow is None:
                self._description = instruments.describe_instrument(
                    self.the_instrument(), self.space, self.objectives, self.candidates_frame
                )
            else:
                parts = [self.step_description(step) for step in self.steps()]
                self._description = DriverDescription(
                    name=" -> ".join(step.name for step in self.steps()),
                    envelope=SafetyEnvelope({k: v for part in parts for k, v in part.envelope.limits.items()}),
                    measures={k: v for part in parts for k, v in part.measures.items()},
                    optional_settings=tuple(name for part in parts for name in part.optional_settings),
                    by_hand=any(part.by_hand for part in parts),
                )
        return self._description

    def to_instrument_units(self, conditions: Mapping[str, Value]) -> Conditions:
        """Each numeric condition converted from the protocol's unit to the unit the envelope declares
        (K -> degC with offsets handled); labels, and values whose units already agree, pass unchanged."""
        return instruments.to_instrument_units(self.description_of_instrument().envelope.limits, self.space, conditions)

    def instrument_options(self) -> BaseModel:
        """The driver's validated options (its own pydantic model; for `driver: serial`, the section)."""
        return instruments.driver_options(self.the_instrument())

    def station_options(self) -> instruments.StationOptions:
        """The engine's part of `instrument.options`: how many stations, which faults to inject."""
        return instruments.station_options(self.the_instrument())


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol file. Raises `ProtocolError` listing every problem found, and OSError
    (FileNotFoundError, IsADirectoryError, ...) when the file cannot be read."""
    path = Path(path)
    with path.open("rb") as f:
        # Refused by its size before anything is parsed; read no further than the limit (a device such
        # as /dev/zero has no size to look at and no end).
        size = os.fstat(f.fileno()).st_size
        if size > MAX_BYTES:
            raise ProtocolError([size_problem(str(path), size)])
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ProtocolError([size_problem(str(path), len(raw), at_least=True)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError([ProtocolProblem(str(path), 1, 1, "", f"not UTF-8 text (byte {e.start}); save the file as UTF-8")]) from None
    return parse_protocol_text(text, path)


DICT_SOURCE = "protocol (a Python dict)"


def protocol_from_dict(data: Mapping[str, Any]) -> Protocol:
    """A protocol written as a Python dict (a notebook), checked like a file. It is kept as YAML text (the
    campaign file stores that text); problems name the field, not a line, and a relative candidates path
    is read from the working folder."""
    if not isinstance(data, Mapping):
        raise ProtocolError([ProtocolProblem(DICT_SOURCE, 0, 0, "", f"expected a dict of sections, got {type(data).__name__}")])
    stream = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    try:
        yaml.dump(_plain(data), stream)
    except RepresenterError as e:
        raise ProtocolError([ProtocolProblem(DICT_SOURCE, 0, 0, "", f"holds a value YAML cannot store ({e})")]) from None
    try:
        protocol = parse_protocol_text(stream.getvalue(), Path.cwd() / "<dict>")
    except ProtocolError as e:
        raise ProtocolError([dataclasses.replace(p, file=DICT_SOURCE, line=0, col=0) for p in e.problems]) from None
    protocol._source = FieldSourceMap(DICT_SOURCE, protocol._source.root if protocol._source else {})
    return protocol


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists (tuples, numpy scalars' Python values), for the YAML dump."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return value.item()
    return value


def parse_protocol_text(text: str, path: str | Path = "<protocol>") -> Protocol:
    """A protocol from its text; `path` names it in messages and anchors a relative candidates path."""
    data, source = load_yaml(text, str(path))
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as e:
        problems = problems_from_validation_error(e, source, Protocol) + _option_problems(data, source)
        raise ProtocolError(sorted(problems, key=lambda p: (p.line, p.col))) from None
    protocol._path = Path(path)
    protocol._text = text
    protocol._source = source
    problems = _cross_section_problems(protocol)
    if problems:
        raise ProtocolError(problems)
    return protocol


def _cross_section_problems(protocol: Protocol) -> list[ProtocolProblem]:
    """Checks that need more than one section: names, constraints, outcome constraints, approval."""
    found: list[ProtocolProblem] = []
    for section, names in (("space", protocol.space), ("objectives", protocol.objectives)):
        for name in names:
            if not is_identifier(name):
                found.append(protocol.problem((section, name), f"{name!r} is not a valid name: use letters, digits and _ (not first)"))
    for name in set(protocol.space) & set(protocol.objectives):
        found.append(protocol.problem(("objectives", name), f"{name!r} is both a parameter and an objective"))
    found += _constraint_problems(protocol)
    for name in protocol.reference_point or {}:
        if name not in protocol.objectives:
            found.append(protocol.problem(("reference_point", name), f"{name!r} is not an objective"))
    for name, header in (protocol.candidates.columns.items() if protocol.candidates else ()):
        if name not in protocol.space and name not in protocol.objectives:
            found.append(protocol.problem(("candidates", "columns", name), f"{name!r} (column {header!r}) is neither a parameter nor an objective"))
    acquisition, n_objectives = protocol.planner.acquisition, len(protocol.objectives)
    if (acquisition == "qLogNEI" and n_objectives > 1) or (acquisition == "qLogNEHVI" and n_objectives < 2):
        wanted = "one objective" if acquisition == "qLogNEI" else "two or more objectives"
        found.append(protocol.problem(("planner", "acquisition"), f"{acquisition} needs {wanted}; this protocol has {n_objectives} (use auto)"))
    found += _instrument_or_workflow_problems(protocol)
    found += _fidelities_problems(protocol)
    if protocol._source is not None:
        if protocol.instrument is not None and protocol.workflow is None:
            found += instruments.option_problems(protocol.instrument, protocol._source)
        for step in steps_of(protocol.workflow) if protocol.instrument is None and protocol.workflow else ():
            view = protocol.step_view(step)
            if step.instrument is not None and view._source is not None:
                found += instruments.option_problems(step.instrument, view._source)
        found += _planner_option_problems(protocol.planner, protocol._source)
    return found + _trusted_region_problems(protocol)


def _one_of_them(protocol: Protocol) -> bool:
    return (protocol.instrument is None) != (protocol.workflow is None)


def _instrument_or_workflow_problems(protocol: Protocol) -> list[ProtocolProblem]:
    """One instrument or a workflow, and in a workflow every parameter received by exactly one step."""
    if not _one_of_them(protocol):
        both = protocol.instrument is not None
        return [protocol.problem(("workflow",) if both else (), (
            "give either instrument (one instrument runs every trial) or workflow (steps on several instruments), "
            "not both" if both else "missing: instrument (the instrument that runs each trial) or workflow (steps)"))]
    if protocol.workflow is None:
        return []
    found = []
    receivers: dict[str, list[str]] = {name: [] for name in protocol.space}
    for step_name, step in protocol.workflow.items():
        if not is_identifier(step_name):
            found.append(protocol.problem(("workflow", step_name), f"{step_name!r} is not a valid step name: use "
                                          "letters, digits and _ (not first)"))
        for i, name in enumerate(step.parameters):
            if name not in protocol.space:
                found.append(protocol.problem(("workflow", step_name, "parameters", i),
                                              f"{name!r} is not a parameter of the space"))
            else:
                receivers[name].append(step_name)
    for name, steps in receivers.items():
        if not steps:
            found.append(protocol.problem(("space", name), f"no step of the workflow receives {name!r}: add it to "
                                          "the parameters of the step that sets it"))
        elif len(steps) > 1:
            found.append(protocol.problem(("space", name), f"{name!r} is received by several steps "
                                          f"({', '.join(steps)}); each parameter is set by exactly one step"))
    return found


def _fidelities_problems(protocol: Protocol) -> list[ProtocolProblem]:
    budget = protocol.budget.instrument_time is not None
    if protocol.fidelities is None:
        return [protocol.problem(("budget", "instrument_time"), "instrument_time counts each trial at its source's "
                                 "declared cost: declare the sources in fidelities, or use trials and wall_time")] if budget else []

    def measured_by(step_name: str) -> set[str] | None:
        step = next(s for s in protocol.steps() if s.name == step_name)
        try:
            return set(protocol.step_description(step).measures)
        except (ProtocolError, instruments.InstrumentDescriptionError, ValueError, KeyError):
            return None

    problems = fidelity_problems(protocol.fidelities, workflow=protocol.workflow if protocol.instrument is None else None,
                                 objectives=list(protocol.objectives), measured_by=measured_by)
    return [protocol.problem(("fidelities", *p.path), p.message) for p in problems]


def _option_problems(data: Any, source: SourceMap) -> list[ProtocolProblem]:
    """The instrument's options, when the rest of the file has problems of its own: reported in the same
    pass as long as the instrument section itself is well formed (its own errors are already listed)."""
    try:
        section = _INSTRUMENT.validate_python(data.get("instrument") if isinstance(data, dict) else None)
    except (ValidationError, ValueError):
        return []
    return instruments.option_problems(section, source)


_INSTRUMENT: TypeAdapter[InstrumentSection] = TypeAdapter(InstrumentSection)


def _planner_option_problems(planner: PlannerSection, source: SourceMap) -> list[ProtocolProblem]:
    """`planner.options` checked by the options model of the planner that will run (names, types, values)."""
    model = PLANNER_OPTIONS[planner.planner_name]
    try:
        model.model_validate(planner.options)
    except ValidationError as e:
        return problems_from_validation_error(e, source, model, prefix=("planner", "options"))
    return []


def _constraint_problems(protocol: Protocol) -> list[ProtocolProblem]:
    found = []
    for i, text in enumerate(protocol.constraints):
        try:
            protocol.parse_constraint(text)
        except ExpressionError as e:
            found.append(protocol.problem(("constraints", i), str(e)))
    units = protocol.outcome_units()
    for i, text in enumerate(protocol.outcome_constraints):
        try:
            parse_outcome_constraint(text, units)
        except ExpressionError as e:
            found.append(protocol.problem(("outcome_constraints", i), str(e)))
    return found


def _trusted_region_problems(protocol: Protocol) -> list[ProtocolProblem]:
    found = []
    for name, bounds in protocol.approval.trusted_region.items():
        at: FieldPath = ("approval", "trusted_region", name)
        spec = protocol.space.get(name)
        if spec is None or isinstance(spec, ChoiceSpec | FixedSpec):
            found.append(protocol.problem(at, f"{name!r} is not a float or int parameter of the space"))
            continue
        try:
            low, high = (protocol._in_parameter_unit(name, v) for v in (bounds.low, bounds.high))
        except UnitError as e:
            found.append(protocol.problem(at, str(e)))
            continue
        infinite = [key for key, value in (("low", low), ("high", high)) if not math.isfinite(value)]
        if infinite:
            found.append(protocol.problem((*at, infinite[0]), f"must be a finite number, got {getattr(bounds, infinite[0])!r}"))
            continue
        if low > high:
            found.append(protocol.problem((*at, "low"), f"low ({low}) is above high ({high})"))
    return found
